"""Operations the HTTP front-ends share (the API and the dashboard), above ``delivery`` and
below ``api`` / ``ui``: neither front-end imports the other."""
