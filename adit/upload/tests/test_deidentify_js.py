"""The browser's de-identifier (static/upload/deidentify.js) on the PHI-rich corpus, in Chromium.

No server: the page is served from a route on http://localhost (a secure context, so Web Crypto
is there), the scripts are the vendored dcmjs and the app's own, the rules come from
`browser_rules()`. What comes out must pass the server's own check and hold no identifier.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from playwright.sync_api import Page
from pydicom import dcmread

from adit.core.dicom.testing.phi_corpus import find_identifiers, make_phi_corpus
from adit.upload.rules import browser_rules, check_instance

from .conftest import PSEUDONYM, encode

pytestmark = [pytest.mark.acceptance]

STATIC = Path(__file__).resolve().parents[2] / "static"


def deidentify_in_browser(
    page: Page, files: list[bytes], secret: str, whole: bool = True
) -> list[dict]:
    """Each file through the browser's de-identifier.

    whole: parse, de-identify and write the whole file (`parse`); else as the upload page
    does it (`deidentifyFile` on a File: the header rewritten, the pixel data sliced from the
    file; `split` says whether that fast path applied).
    """
    page.route(
        "http://localhost/",
        lambda route: route.fulfill(content_type="text/html", body="<html><body></body></html>"),
    )
    page.goto("http://localhost/")
    page.add_script_tag(path=str(STATIC / "vendor" / "dcmjs" / "dcmjs.min.js"))
    page.add_script_tag(path=str(STATIC.parent / "upload" / "static" / "upload" / "deidentify.js"))
    return page.evaluate(
        """async ([rules, files, secret, pseudonym, whole]) => {
          const { Deidentifier, parse, deidentifyFile, fileParts } = window.AditUpload;
          const deidentifier = await Deidentifier.create(rules, secret, {
            pseudonym, trialProtocolId: "TRIAL-9", trialProtocolName: "Trial nine" });
          const out = [];
          for (const text of files) {
            const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
            const parsed = parse(bytes.buffer);
            if (parsed.skip) { out.push({ skip: parsed.skip }); continue; }
            const reason = deidentifier.skipReason(parsed.dicomDict.dict, parsed.dicomDict.meta);
            if (reason) { out.push({ skip: reason }); continue; }
            let written;
            let split = false;
            if (whole) {
              await deidentifier.deidentify(parsed.dicomDict);
              written = new Uint8Array(parsed.dicomDict.write());
            } else {
              const file = new File([bytes], "x.dcm");
              const result = await deidentifyFile(file, deidentifier);
              split = result.pixelEnd > 0;
              written = new Uint8Array(await new Blob(fileParts(file, result)).arrayBuffer());
            }
            let binary = "";
            for (let i = 0; i < written.length; i += 8192) {
              binary += String.fromCharCode(...written.subarray(i, i + 8192));
            }
            out.push({ data: btoa(binary), split });
          }
          return out;
        }""",
        [browser_rules(), [base64.b64encode(f).decode() for f in files], secret, PSEUDONYM, whole],
    )


@pytest.mark.parametrize("whole", [True, False], ids=["whole file", "header only"])
def test_phi_corpus_leaves_the_browser_without_identifiers(page: Page, settings, whole):
    corpus = make_phi_corpus(seed="browser-deid")
    files = [encode(ds) for ds in corpus.datasets] + [b"not dicom at all" * 20]
    results = deidentify_in_browser(page, files, "ab" * 32, whole)

    skipped = [r["skip"] for r in results if "skip" in r]
    assert len(skipped) == 4, skipped  # SR, burned-in SC, unflagged US, the text file
    assert any("modality SR" in s for s in skipped)
    assert any("BurnedInAnnotation YES" in s for s in skipped)
    assert any("Ultrasound Image Storage" in s for s in skipped)
    assert any("not DICOM" in s for s in skipped)
    outputs = [base64.b64decode(r["data"]) for r in results if "data" in r]
    assert len(outputs) == 2  # the two CT instances
    # The page's way rewrites only the header and sends the pixel data as it was.
    assert [r["split"] for r in results if "data" in r] == [not whole, not whole]
    datasets = [dcmread(io.BytesIO(raw)) for raw in outputs]
    for ds, raw in zip(datasets, outputs, strict=True):
        check_instance(ds, PSEUDONYM)  # the server's own check accepts it
        assert find_identifiers([ds, raw], corpus.all_identifiers()) == set()
        assert not [uid for uid in corpus.original_uids if uid.encode() in raw]
        assert ds.ClinicalTrialProtocolID == "TRIAL-9"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.pixel_array.shape == (16, 16)
    # One study, one series: the same new UIDs in both instances; dates shifted alike.
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 2
    assert len({ds.StudyDate for ds in datasets}) == 1
    assert datasets[0].StudyDate != "20190312"
    originals = [ds for ds in corpus.datasets if ds.Modality == "CT"]
    assert [
        int(ds.PixelData == o.PixelData) for ds, o in zip(datasets, originals, strict=True)
    ] == [1, 1]

    # The same secret gives the same UIDs again (a resumed upload); another gives others.
    again = deidentify_in_browser(page, files[:1], "ab" * 32, whole)[0]
    other = deidentify_in_browser(page, files[:1], "cd" * 32, whole)[0]
    assert dcmread(io.BytesIO(base64.b64decode(again["data"]))).SOPInstanceUID == (
        datasets[0].SOPInstanceUID
    )
    assert dcmread(io.BytesIO(base64.b64decode(other["data"]))).SOPInstanceUID != (
        datasets[0].SOPInstanceUID
    )


@pytest.mark.parametrize(
    ("variant", "split"),
    [
        ("implicit VR little endian", True),
        ("RLE lossless (encapsulated)", True),
        ("attributes after the pixel data", False),
        ("icon image with its own pixel data", True),
    ],
)
def test_header_only_path_keeps_the_pixel_data_byte_for_byte(page: Page, variant, split):
    from pydicom import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ImplicitVRLittleEndian

    from adit.core.dicom.testing.synthetic import make_study

    compressed = variant.startswith("RLE")
    ds = make_study(
        "MRN-SPLIT-1", "Quaxworth^Eulalia", series=(("CT", 1),), compressed_series=compressed
    )[0]
    ds.InstitutionName = "Zebulon Cottage Infirmary"
    if variant.startswith("implicit"):
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    if variant.startswith("attributes after"):
        ds.add_new(0xFFFCFFFC, "OB", b"\0" * 16)  # DataSetTrailingPadding
    if variant.startswith("icon"):
        icon = Dataset()
        icon.Rows = icon.Columns = 2
        icon.BitsAllocated = icon.BitsStored = 8
        icon.HighBit = 7
        icon.PixelRepresentation = 0
        icon.SamplesPerPixel = 1
        icon.PhotometricInterpretation = "MONOCHROME2"
        icon.PixelData = b"\1\2\3\4"
        ds.IconImageSequence = Sequence([icon])
    raw = encode(ds)
    result = deidentify_in_browser(page, [raw], "ef" * 32, whole=False)[0]
    assert result["split"] is split
    out = base64.b64decode(result["data"])
    new = dcmread(io.BytesIO(out))
    check_instance(new, PSEUDONYM)
    assert b"Quaxworth" not in out and b"MRN-SPLIT-1" not in out and b"Zebulon" not in out
    assert new.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert new.PixelData == ds.PixelData
    if split:
        start = raw.rindex(b"\xe0\x7f\x10\x00")
        assert out.endswith(raw[start:])  # the original element, byte for byte, at the end
