-- The role and database of a lastcall cluster. Run once as a superuser:
--   psql -v password="'...'" -f create-database.sql
-- Collation C: text sorts byte by byte, as on SQLite (ids, dates, cursors of paged lists).
CREATE ROLE lastcall LOGIN PASSWORD :password;
CREATE DATABASE lastcall OWNER lastcall ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
-- The first lastcall node to start creates the tables (versioned migrations, under an advisory lock).
