"""ADIT's DICOM network stack: one upper layer for every DIMSE service ADIT uses.

A module per concept of the standard, lowest first:

* `pdus` — PDU framing and bounded reads (PS3.8 9.3);
* `errors` — what ends an association early;
* `commands` — DIMSE command sets, built and read with `struct` (PS3.7 9.3, Annex E);
* `statuses` — status categories and names, from pynetdicom's tables (PS3.7 Annex C);
* `association` — negotiation as requestor and acceptor, role selection, release and abort,
  and the association messages travel on (PS3.8 7, 9.3.2-4; PS3.7 D.3.3).

The services (C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE as SCU) live in `dicom/dimse.py`
(`DimseConnector`, the façade the operator uses) and the C-STORE SCP in `dicom/receiver.py`.
pynetdicom lends its PDU item codecs, presentation contexts and status tables; nothing of its
association machinery runs.
"""
