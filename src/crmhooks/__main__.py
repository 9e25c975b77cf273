from crmhooks.cli import main

main()
