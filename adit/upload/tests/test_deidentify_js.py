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


def deidentify_in_browser(page: Page, files: list[bytes], secret: str) -> list[dict]:
    page.route(
        "http://localhost/",
        lambda route: route.fulfill(content_type="text/html", body="<html><body></body></html>"),
    )
    page.goto("http://localhost/")
    page.add_script_tag(path=str(STATIC / "vendor" / "dcmjs" / "dcmjs.min.js"))
    page.add_script_tag(path=str(STATIC.parent / "upload" / "static" / "upload" / "deidentify.js"))
    return page.evaluate(
        """async ([rules, files, secret, pseudonym]) => {
          const { Deidentifier, parse } = window.AditUpload;
          const deidentifier = await Deidentifier.create(rules, secret, {
            pseudonym, trialProtocolId: "TRIAL-9", trialProtocolName: "Trial nine" });
          const out = [];
          for (const text of files) {
            const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
            const parsed = parse(bytes.buffer);
            if (parsed.skip) { out.push({ skip: parsed.skip }); continue; }
            const reason = deidentifier.skipReason(parsed.dicomDict.dict, parsed.dicomDict.meta);
            if (reason) { out.push({ skip: reason }); continue; }
            await deidentifier.deidentify(parsed.dicomDict);
            const written = new Uint8Array(parsed.dicomDict.write());
            let binary = "";
            for (let i = 0; i < written.length; i += 8192) {
              binary += String.fromCharCode(...written.subarray(i, i + 8192));
            }
            out.push({ data: btoa(binary) });
          }
          return out;
        }""",
        [browser_rules(), [base64.b64encode(f).decode() for f in files], secret, PSEUDONYM],
    )


def test_phi_corpus_leaves_the_browser_without_identifiers(page: Page, settings):
    corpus = make_phi_corpus(seed="browser-deid")
    files = [encode(ds) for ds in corpus.datasets] + [b"not dicom at all" * 20]
    results = deidentify_in_browser(page, files, "ab" * 32)

    skipped = [r["skip"] for r in results if "skip" in r]
    assert len(skipped) == 4, skipped  # SR, burned-in SC, unflagged US, the text file
    assert any("modality SR" in s for s in skipped)
    assert any("BurnedInAnnotation YES" in s for s in skipped)
    assert any("Ultrasound Image Storage" in s for s in skipped)
    assert any("not DICOM" in s for s in skipped)
    outputs = [base64.b64decode(r["data"]) for r in results if "data" in r]
    assert len(outputs) == 2  # the two CT instances
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
    again = deidentify_in_browser(page, files[:1], "ab" * 32)[0]
    other = deidentify_in_browser(page, files[:1], "cd" * 32)[0]
    assert dcmread(io.BytesIO(base64.b64decode(again["data"]))).SOPInstanceUID == (
        datasets[0].SOPInstanceUID
    )
    assert dcmread(io.BytesIO(base64.b64decode(other["data"]))).SOPInstanceUID != (
        datasets[0].SOPInstanceUID
    )
