"""Fill an Orthanc (the first demo PACS by default) with the demo patients and studies."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from adit.core.demo import (
    DEMO_AE_TITLES,
    DemoError,
    DemoPacs,
    known_demo_pacs,
    load_demo_studies,
    reset_pacs,
)


class Command(BaseCommand):
    help = (
        "Load the synthetic demo patients and studies into an Orthanc through its REST API "
        "(studies already there are skipped). The target is --orthanc-url, else the configured "
        "server with AE title --ae (its DICOMweb root URL minus '/dicom-web' is taken as the "
        "REST URL), else the first registered demo PACS, else the first running demo PACS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset", action="store_true", help="Delete everything in the Orthanc first."
        )
        parser.add_argument("--orthanc-url", default="", help="Base URL of the Orthanc REST API.")
        parser.add_argument("--ae", default="", help="AE title of a configured Orthanc server.")

    def handle(self, *args: Any, **options: Any) -> None:
        pacs = self._target(options["orthanc_url"].strip(), options["ae"].strip())
        try:
            if options["reset"]:
                deleted = reset_pacs(pacs)
                self.stdout.write(f"Deleted {deleted} patient(s) from {pacs.name}.")
            result = load_demo_studies(pacs)
        except DemoError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"{pacs.name}: loaded {result.loaded_studies} demo studies "
            f"({result.instances} instances), {result.skipped_studies} already there."
        )

    def _target(self, orthanc_url: str, ae_title: str) -> DemoPacs:
        from adit.core.models import DicomServer

        if orthanc_url:
            if not orthanc_url.startswith(("http://", "https://")):
                raise CommandError(
                    f"--orthanc-url must start with http:// or https://: {orthanc_url!r}"
                )
            return DemoPacs(name=orthanc_url, ae_title=ae_title, rest_url=orthanc_url.rstrip("/"))
        if ae_title:
            server = DicomServer.objects.filter(ae_title=ae_title).first()
            if server is None:
                raise CommandError(f"No DICOM server with the AE title {ae_title!r} is configured.")
            return self._from_server(server)
        registered = [
            server
            for ae in DEMO_AE_TITLES
            if (server := DicomServer.objects.filter(ae_title=ae, active=True).first())
        ]
        if registered:
            return self._from_server(registered[0])
        running = [pacs for pacs in known_demo_pacs(settings.ADIT_DATA_DIR) if pacs.answers()]
        if not running:
            raise CommandError(
                "No demo PACS is registered or running; start them with `cli demo`, or name an "
                "Orthanc with --orthanc-url or --ae."
            )
        return running[0]

    def _from_server(self, server) -> DemoPacs:
        root = server.dicomweb_root_url.rstrip("/")
        rest_url = root.removesuffix("/dicom-web") if root.endswith("/dicom-web") else ""
        if not rest_url and not server.has_dimse:
            raise CommandError(
                f"The server {server.name} has neither a DICOMweb root URL ending in /dicom-web "
                "(Orthanc's REST API) nor DIMSE; give --orthanc-url."
            )
        return DemoPacs(
            name=server.name,
            ae_title=server.ae_title,
            host=server.host,
            dicom_port=server.port or 0,
            rest_url=rest_url,
            kind="orthanc" if rest_url else "qrscp",
        )
