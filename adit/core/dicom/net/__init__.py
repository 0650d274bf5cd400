"""ADIT's DICOM network stack: one upper layer for every DIMSE service ADIT uses.

A module per concept of the standard, lowest first:

* `pdus` — PDU framing and bounded reads (PS3.8 9.3);
* `errors` — what ends an association early;
* `commands` — DIMSE command sets, built and read with `struct` (PS3.7 9.3, Annex E);
* `statuses` — status categories and names, from pynetdicom's tables (PS3.7 Annex C);
* `association` — negotiation as requestor and acceptor, role selection, release and abort,
  and the association messages travel on (PS3.8 7, 9.3.2-4; PS3.7 D.3.3);
* `c_echo`, `c_find`, `c_get`, `c_move`, `c_store` — each DIMSE service's message exchange as
  SCU (PS3.7 9.1), with every response validated (`commands.receive_response`).

What a status means for a transfer (retry, warn, fail), which contexts to propose and how to
encode an instance is decided above this package, in `DimseConnector` (`dicom/dimse.py`, the
façade the operator uses); the C-STORE SCP is the receiver (`dicom/receiver.py`).
pynetdicom lends its PDU item codecs, presentation contexts and status tables; nothing of its
association machinery runs.
"""
