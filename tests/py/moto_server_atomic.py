"""moto's server, with S3's conditional writes made atomic, for the test suite.

S3 evaluates a PutObject with `If-None-Match: *` or `If-Match` atomically: of writers
racing on one key, exactly one creates it, and a swap from a stale version fails. moto
(5.x) checks the condition and then writes, without a lock, so two racing conditional
writes can both succeed when a busy machine interleaves them (seen in CI: the store
conformance test's eight racers got two winners). fanout's commit records, ledger entries
and leases rely on S3's guarantee, and the tests race on purpose; this wrapper puts one lock
around moto's conditional PutObject so the emulator keeps the guarantee it stands in for.
Unconditional writes are untouched. Arguments are moto_server's.
"""

import sys
import threading

from moto.s3.responses import S3Response
from moto.server import main

_CONDITIONAL = threading.Lock()
_put_object = S3Response.put_object


def _atomic_put_object(self, *args, **kwargs):
    if self.headers.get("If-None-Match") or self.headers.get("If-Match"):
        with _CONDITIONAL:
            return _put_object(self, *args, **kwargs)
    return _put_object(self, *args, **kwargs)


S3Response.put_object = _atomic_put_object

if __name__ == "__main__":
    sys.exit(main())
