//! DQL: parse, plan, compile to Postgres SQL, evaluate in memory.
