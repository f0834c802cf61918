"""``make demo``: train the default character model on Python's standard library, then sample.

About three minutes of training on two CPU cores (the default ``--minutes 3``), then a
sample primed with the start of a function, printed as it is generated. The run is left in
``runs/`` for ``rnnkit sample`` and ``rnnkit eval``.
"""

from __future__ import annotations

import sys
import time

from rnnkit.tasks import charlm, default_run_dir
from rnnkit.training import heap

PRIME = "def "


def main() -> int:
    start = time.monotonic()
    config = charlm.Config()  # the defaults: stdlib, three minutes
    heap.keep_freed_blocks()  # as rnnkit train does: each step reuses the last one's memory
    print(
        f"training a {config.cell.upper()} of {config.hidden} units on '{config.data}' "
        f"for {config.minutes:g} minutes (run directory {default_run_dir(charlm.NAME)} or similar)"
    )
    trainer = charlm.train(config)
    print(
        f"\nbest validation loss {trainer.best:.3f} nats/char "
        f"({trainer.best / 0.6931471805599453:.3f} bits/char); a sample:\n"
    )
    charlm.sample(config.out, prime=PRIME, length=700, temperature=0.8, top_k=20, seed=1)
    print(
        f"\n(demo took {time.monotonic() - start:.0f} s; more with: "
        f"rnnkit sample {config.out} --prime 'class ' --temperature 0.8)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
