-- This database's id, generated once. Access and refresh tokens carry it
-- (`iss`) and are refused by any other database, where the user and session
-- ids they name may belong to someone else.
CREATE TABLE installation (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    id         TEXT NOT NULL
);
INSERT INTO installation (singleton, id) VALUES (1, lower(hex(randomblob(16))));
