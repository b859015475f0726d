"""The store in SQL, written once for every engine (store/sqlite/, store/postgresql/)."""
