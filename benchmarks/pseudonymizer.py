"""The per-instance CPU cost of a transfer's own work, in memory, without any peer.

What a worker does to each instance between the socket of the C-GET and the socket of the
C-STORE: check and decode the received data set, transform it (nothing, or the PS3.15 Basic
Profile with a pseudonym), and produce the bytes to send (the received ones when unchanged,
else encoded again). This script runs exactly those steps on a synthetic study held in memory,
so their cost shows without the noise of Orthanc and the network::

    uv run python benchmarks/pseudonymizer.py [--instances 300] [--rows 512] [--repeat 3]
        [--options retain_modified_dates,clean_descriptors] [--profile FILE]

It prints milliseconds of CPU per instance for each step (best of ``--repeat`` rounds, the
process's CPU time, so other load on the machine matters less than for wall time), and with
``--profile`` writes a cProfile of the pseudonymized rounds and prints its top entries.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

from adit.core.dicom.completeness import check_complete  # noqa: E402
from adit.core.dicom.dimse import (  # noqa: E402
    _decode_from,
    _encode_for,
    _encode_instance,
    received_encoding,
    remember_received_encoding,
)
from adit.core.dicom.encoding import file_meta  # noqa: E402
from adit.core.dicom.pseudonymizer import InstanceTransformer  # noqa: E402
from adit.core.dicom.testing.synthetic import make_large_study  # noqa: E402

SYNTAX = ExplicitVRLittleEndian


def received(encoded: bytes, sop_class: str, sop_instance: str):
    """What `DimseConnector._received_instance` makes of a C-STORE sub-operation's data set."""
    check_complete(encoded, SYNTAX)
    ds = _decode_from(encoded, SYNTAX)
    ds.file_meta = file_meta(sop_class, sop_instance, SYNTAX)
    remember_received_encoding(ds, SYNTAX, encoded)
    return ds


def to_send(ds) -> bytes:
    """What `DimseConnector._encoded_for_store` sends (the received bytes when unchanged)."""
    again = received_encoding(ds)
    if again is not None:
        return again[1]
    return _encode_instance(ds, SYNTAX)


def one_round(messages, make_transformer) -> dict[str, float]:
    transformer = make_transformer()
    spent = {"decode": 0.0, "transform": 0.0, "encode": 0.0}
    clock = time.process_time
    for encoded, sop_class, sop_instance in messages:
        t0 = clock()
        ds = received(encoded, sop_class, sop_instance)
        t1 = clock()
        out = transformer.transform(ds)
        t2 = clock()
        if out is not None:
            to_send(out)
        t3 = clock()
        spent["decode"] += t1 - t0
        spent["transform"] += t2 - t1
        spent["encode"] += t3 - t2
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--options", default="", help="comma list of de-identification options")
    parser.add_argument("--profile", help="write a cProfile of the pseudonymized rounds here")
    args = parser.parse_args()

    study = make_large_study(args.instances, rows=args.rows, columns=args.rows)
    messages = [
        (_encode_for(ds, SYNTAX), str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in study
    ]
    del study
    size = sum(len(m[0]) for m in messages) / len(messages)
    print(f"{len(messages)} instances of {args.rows}×{args.rows} px, {size / 1024:.0f} KiB each")
    options = [o for o in args.options.split(",") if o]
    ways = {
        "unmodified": lambda: InstanceTransformer(),
        "pseudonymized": lambda: InstanceTransformer(
            pseudonym="BENCHPSN01", seed="bench-seed", deid_options=options
        ),
    }
    profiler = cProfile.Profile() if args.profile else None
    for way, make in ways.items():
        best: dict[str, float] | None = None
        for _ in range(args.repeat):
            if profiler is not None and way == "pseudonymized":
                profiler.enable()
            spent = one_round(messages, make)
            if profiler is not None:
                profiler.disable()
            if best is None or sum(spent.values()) < sum(best.values()):
                best = spent
        assert best is not None
        per = {step: 1000 * seconds / len(messages) for step, seconds in best.items()}
        print(
            f"{way:14s} total {sum(per.values()):6.3f} ms/instance  "
            + "  ".join(f"{step} {ms:6.3f}" for step, ms in per.items())
        )
    if profiler is not None:
        profiler.dump_stats(args.profile)
        stats = pstats.Stats(args.profile)
        stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
