"""A transparency-log witness (C2SP tlog-witness v1.0.0): it cosigns a log's checkpoint
only when it is consistent with every checkpoint of that log it cosigned before.

``witness.protocol`` is the pure core (parse a request, decide the answer);
``witness.state`` keeps what the witness has seen in SQLite; ``witness.server``
serves it over HTTP.
"""
