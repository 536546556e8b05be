"""Run the likelihood families' DDP cases one after another in the same 2 CPU processes (one gloo start-up for
all): each family's ``main`` writes into its own subfolder of OUT_DIR, as it would alone into OUT_DIR --
``actnorm/`` (ddp_actnorm.py), ``score/`` (ddp_score.py), ``guided/`` (ddp_guided.py), ``likelihood/``
(ddp_likelihood.py, last: it ends with a NaN loss that stops both ranks on purpose).

Run as a script (DDP re-launches the script for rank 1 at the first fit; later fits reuse both processes):
``python tests/scripts/ddp_likelihood_families.py OUT_DIR``. The tests share one launch: the session fixture
``likelihood_ddp_runs`` in tests/conftest.py.
"""

import os
from pathlib import Path

import ddp_actnorm
import ddp_guided
import ddp_likelihood
import ddp_score
from ddp_common import run

FAMILIES = {"actnorm": ddp_actnorm.main, "score": ddp_score.main, "guided": ddp_guided.main,
            "likelihood": ddp_likelihood.main}


def main(out: Path) -> None:
    """Run every family's ``main`` in turn, each into ``out / <family>``."""
    for name, family in FAMILIES.items():
        # an earlier family's seed_everything leaves its seed here, and each fit's DDP set-up re-seeds from it:
        # drop it, so that every family starts as it would in a launch of its own
        os.environ.pop("PL_GLOBAL_SEED", None)
        os.environ.pop("PL_SEED_WORKERS", None)
        (out / name).mkdir(exist_ok=True)
        family(out / name)


if __name__ == "__main__":
    run(main)
