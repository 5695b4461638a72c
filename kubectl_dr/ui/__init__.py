"""Everything the user sees: results on stdout (table/json/yaml), progress and messages on stderr."""
