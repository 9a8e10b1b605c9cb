"""The clinic's record: results, cases, reviews, the audit log, retention and exports, in
SQLite and JPEG files on the device. Not a cache: nothing here is deleted to make room."""
