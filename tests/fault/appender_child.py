"""Child process for the crash campaign: appends signed entries until killed.

Prints ``ACK <index> <sha256 of leaf>`` for every entry only after
`append_entries` returned, i.e. once the ledger acknowledged it as durable.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

from ledger.log import Ledger
from ledger.note import Signer

SIGNER = Signer("custody.test/crash", bytes(range(32)))


def main() -> None:
    root, run, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    with Ledger(root / "ledger", root / "state", SIGNER.name, SIGNER) as led:
        if rng.random() < 0.5:
            led.start_integrator(rng.choice([0.005, 0.02, 0.05]))
        print("READY", flush=True)
        i = 0
        while True:
            n = rng.choice([1, 1, 3, 17, 64, 200, 300])
            items = [
                ("note", {"run": run, "i": i + k, "text": "x" * rng.randint(0, 900)})
                for k in range(n)
            ]
            idx = led.append_entries(items)
            out = []
            for j in idx:
                leaf = led.entry(j) if j == idx[-1] else None
                out.append(f"ACK {j} {hashlib.sha256(leaf).hexdigest() if leaf else '-'}")
            sys.stdout.write("\n".join(out) + "\n")
            sys.stdout.flush()
            i += n
            if rng.random() < 0.3:
                led.integrate()


if __name__ == "__main__":
    main()
