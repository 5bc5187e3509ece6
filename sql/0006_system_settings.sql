-- bigpeer: the system parameters `ALTER SYSTEM` sets (`DQL_STRICT_MODE`, ...), kept in the
-- database so that they survive a restart and every bigpeer process on the database uses the
-- same ones. One row per parameter set away from its default; `RESET` deletes the row.
CREATE TABLE IF NOT EXISTS system_settings (
  name text PRIMARY KEY,
  value jsonb NOT NULL
);
