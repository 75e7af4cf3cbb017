"""Body decoding (``formats``) and the parsers that turn decoded trees into records."""
