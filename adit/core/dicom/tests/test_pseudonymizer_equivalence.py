"""The pseudonymizer's output is exactly what it was before its fast paths, on a varied corpus.

The pseudonymizer keeps work between the instances of a study (see its module docstring): what
an element became is reused for the same element in the next instance. For that to be safe,
every instance must come out byte for byte as the plain walk made it. This module holds the
SHA-256 of every output of a varied corpus as the plain walk produced it (recorded at 86a74bf,
before the fast paths, in `pseudonymizer_golden.json`) and checks three ways of running the
corpus against them: a fresh pseudonymizer per instance (nothing to reuse), one pseudonymizer
for the whole corpus in order (reuse within a study and across patients), and the same one
over the corpus a second time (everything reused).

The corpus: the PHI corpus, the "rich" data set of `test_pseudonymizer_raw` (with standard
elements received as UN), a synthetic study of six modalities with an RLE series, and a study
whose instances differ in exactly what an element's replacement depends on besides its own
value: the time beside a shifted date, the patient's sex beside a replaced name, malformed
and multi-valued dates, and a second patient in between. Each in Explicit and Implicit VR
Little Endian, under five sets of options; each output encoded in both syntaxes.

After a deliberate change of the output (a new profile rule), record the digests again::

    uv run python -m adit.core.dicom.tests.test_pseudonymizer_equivalence --record
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from adit.core.dicom.dimse import (
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    _decode_from,
    _encode_for,
    uid_of,
)
from adit.core.dicom.pseudonymizer import PseudonymizedInstance, Pseudonymizer
from adit.core.dicom.testing.phi_corpus import make_phi_corpus
from adit.core.dicom.testing.synthetic import make_study
from adit.core.dicom.tests.test_pseudonymizer_raw import rich_dataset, transfer_bytes

GOLDEN = Path(__file__).with_name("pseudonymizer_golden.json")
SEED = "equivalence-seed"
PSEUDONYM = "PSN-EQUIV"
OPTION_SETS = {
    "basic": [],
    "modified-dates": ["retain_modified_dates"],
    "modified-dates-clean": ["retain_modified_dates", "clean_descriptors"],
    "full-dates-characteristics-device": [
        "retain_full_dates",
        "retain_patient_characteristics",
        "retain_device_identity",
    ],
    "institution-structured-safe-private": [
        "retain_institution_identity",
        "clean_structured_content",
        "retain_safe_private",
    ],
}
SYNTAXES = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian}


# --- the corpus ---------------------------------------------------------------------------------


def _varied_study() -> list[Dataset]:
    """Instances of one study that differ in what replacements depend on besides the value."""
    datasets = make_study(
        "PAT-VARIED-01",
        "Varied^Valentina^Maria",
        birth_date="19800229",
        series=(("CT", 6), ("MR", 2)),
        compressed_series=False,
        seed="varied",
        patient_sex="F",
    )
    sexes = ["F", "M", "", "O", "F", "M", "F", "F"]
    for index, ds in enumerate(datasets):
        ds.PatientSex = sexes[index]
        # A name after PatientSex (the profile empties the sex before it gets there).
        ds.OtherPatientNames = ["Varied^Vera", f"Alias^Number{index % 3}"]
        ds.ReferringPhysicianName = "Referrer^Rupert"
        # Names replaced by dummies at the top level: their first names follow the PatientSex
        # (kept with Retain Patient Characteristics).
        ds.VerifyingObserverName = "Verifier^Vincent"
        ds.PersonName = ["Person^Paula", "Person^Peter"] if index % 2 else "Person^Paula"
        # The same date beside different times (a date is shifted together with its time).
        ds.ContentTime = f"10{index % 4:02d}00.{index}"
        ds.AcquisitionTime = "1015" if index % 2 else "101500.123456"
        ds.InstanceCreationTime = "" if index == 3 else "101600"
        if index == 2:
            ds.AcquisitionDate = "2024.01.01"  # ACR-NEMA style
        if index == 4:
            ds.ContentDate = "20241301"  # month 13: blanked with its time
        if index == 5:
            ds.DateOfLastCalibration = ["20230101", "20230202"]
            ds.TimeOfLastCalibration = ["0800", "0915"]
        ds.StudyComments = f"Valentina's scan, part {index % 2}"
        ds.ImageComments = "Varied" if index % 2 else "nothing to see"
        ds.add_new(0x00091010, "LO", "ACME 1.0")
        ds.add_new(0x00091001, "LO", f"private {index % 2}")
    return datasets


def corpus() -> list[tuple[str, str, bytes]]:
    """(label, transfer syntax, encoded data set) in the order a transfer might bring them."""
    instances: list[tuple[str, Dataset]] = []
    instances += [(f"phi-{i}", ds) for i, ds in enumerate(make_phi_corpus().datasets)]
    varied = _varied_study()
    other = make_study(
        "PAT-OTHER-02", "Other^Otto", series=(("CT", 2),), compressed_series=False, seed="other"
    )
    # The other patient in the middle of the varied study: nothing of one may leak into the other.
    instances += [(f"varied-{i}", ds) for i, ds in enumerate(varied[:4])]
    instances += [(f"other-{i}", ds) for i, ds in enumerate(other)]
    instances += [(f"varied-{i}", ds) for i, ds in enumerate(varied[4:], start=4)]
    modalities = make_study(
        "PAT-MODALITIES",
        "Smithfield^Harriet",
        series=(("CT", 2), ("MR", 1), ("US", 1), ("NM", 1), ("SR", 1), ("PR", 1), ("MR", 2)),
        compressed_series=True,
        seed="modalities",
    )
    instances += [(f"modalities-{i}", ds) for i, ds in enumerate(modalities)]
    items = []
    for label, ds in instances:
        syntax = str(ds.file_meta.TransferSyntaxUID)
        if syntax == RLELossless:
            items.append((label + "-rle", syntax, _encode_for(ds, syntax)))
            continue
        for name, syntax in SYNTAXES.items():
            items.append((f"{label}-{name}", syntax, _encode_for(ds, syntax)))
    for name, syntax in SYNTAXES.items():
        items.append((f"rich-{name}", syntax, transfer_bytes(rich_dataset(), syntax)))
    return items


def output_digest(ds: Dataset, syntax: str, replaced: PseudonymizedInstance) -> str:
    """SHA-256 of what leaves ADIT: the data set in each syntax it may be sent in, the file meta
    and what the mapping records."""
    digest = hashlib.sha256()
    syntaxes = [syntax] if syntax == RLELossless else list(SYNTAXES.values())
    for target in syntaxes:
        digest.update(_encode_for(ds, target))
    digest.update(encode_file_meta(ds.file_meta))
    digest.update(repr(replaced).encode())
    return digest.hexdigest()


def run(pseudonymizer: Pseudonymizer | None, options: list[str], items) -> Iterator[tuple]:
    """(label, digest, output) per item; a fresh pseudonymizer per item when None."""
    for label, syntax, encoded in items:
        worker = pseudonymizer or Pseudonymizer(seed=SEED, options=options)
        ds = _decode_from(encoded, syntax)
        # As `DimseConnector` receives an instance: file meta from the C-STORE request's UIDs.
        ds.file_meta = create_file_meta(
            sop_class_uid=UID(uid_of(ds, SOP_CLASS_UID)),
            sop_instance_uid=UID(uid_of(ds, SOP_INSTANCE_UID)),
            transfer_syntax=UID(syntax),
        )
        replaced = worker.pseudonymize(ds, PSEUDONYM)
        yield label, output_digest(ds, syntax, replaced), ds


def record() -> None:
    items = corpus()
    golden = {
        name: {label: digest for label, digest, _ in run(None, options, items)}
        for name, options in OPTION_SETS.items()
    }
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"recorded {sum(map(len, golden.values()))} digests in {GOLDEN}")


# --- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def items():
    return corpus()


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


def test_corpus_is_what_the_digests_were_recorded_for(items, golden):
    labels = {label for label, _, _ in items}
    assert len(labels) == len(items), "labels must be unique"
    for name in OPTION_SETS:
        assert set(golden[name]) == labels, name


@pytest.mark.parametrize("name", OPTION_SETS)
def test_fresh_pseudonymizer_per_instance_gives_the_recorded_output(name, items, golden):
    differing = [
        label
        for label, digest, _ in run(None, OPTION_SETS[name], items)
        if digest != golden[name][label]
    ]
    assert not differing, f"{name}: output differs from the recorded one for {differing}"


@pytest.mark.parametrize("name", OPTION_SETS)
def test_one_pseudonymizer_for_the_corpus_gives_the_recorded_output(name, items, golden):
    from adit.core.dicom.tests.test_pseudonymizer_raw import differences

    options = OPTION_SETS[name]
    shared = Pseudonymizer(seed=SEED, options=options)
    fresh = {label: ds for label, _, ds in run(None, options, items)}
    for round_ in ("first", "second"):
        for label, digest, ds in run(shared, options, items):
            if digest != golden[name][label]:
                # Where and how it differs from the output of a fresh pseudonymizer.
                found = list(differences(ds, fresh[label]))
                found += [
                    f"file meta: {d}" for d in differences(ds.file_meta, fresh[label].file_meta)
                ]
                pytest.fail(
                    f"{name}, {round_} round, {label}: output differs from the recorded one:\n"
                    + ("\n".join(found) or "(same elements, different bytes)")
                )


def test_memo_emptied_at_its_limit_changes_nothing(items, golden, monkeypatch):
    from adit.core.dicom import pseudonymizer

    monkeypatch.setattr(pseudonymizer, "_MEMO_LIMIT_BYTES", 2000)
    shared = Pseudonymizer(seed=SEED, options=OPTION_SETS["modified-dates-clean"])
    for _ in range(2):
        for label, digest, _ds in run(shared, OPTION_SETS["modified-dates-clean"], items):
            assert digest == golden["modified-dates-clean"][label], label
        assert shared._memo_bytes <= 2000 + 64 * 1024  # emptied on the way, never far beyond


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        record()
    else:
        sys.exit(f"usage: {sys.argv[0]} --record")
