"""Association tuning for ADIT's outgoing (requestor) associations.

pynetdicom runs a reactor thread for every association. Before each `send_*()` call the caller
clears a checkpoint and spins until the reactor says it is paused; the reactor sets
`_is_paused = True` *before* it waits on that checkpoint. When the checkpoint is still set at
that moment, the reactor walks on and then takes the next DIMSE message off the queue itself,
while the caller sees the stale `True`, sends its request and waits for an answer that the
reactor has already swallowed: the operation ends with "no response" after the DIMSE timeout.
Under load (two busy associations in one process, a slow machine) this happens every few
hundred instances.

A requestor association of ADIT never serves requests from the peer (C-GET sub-operations are
taken by `send_c_get()` itself), so the reactor is kept waiting for the whole life of the
association: it wakes only when the association is being killed or the peer aborted, which is
all it is needed for. The `send_*()` calls then never wait for it to pause (which cost up to
1 ms per message) and nothing can be taken from under them.
"""

from __future__ import annotations

import logging
import threading

from pydicom import config as pydicom_config
from pynetdicom import _config as pynetdicom_config
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.fsm import StateMachine

# pynetdicom's transport thread sleeps this long whenever it finds nothing to do (default 1 ms),
# which adds up to that much latency to every message in each direction. ADIT's requestor
# associations are short-lived and busy, so they poll faster; measured on the 2-core benchmark
# machine: C-STORE of 500 small instances 140 → 180 instances/s.
ACTIVE_DUL_LOOP_DELAY_SECONDS = 0.0002

# How often the held reactor looks whether the association is being killed or was aborted.
_KILL_POLL_SECONDS = 0.05


def prepare_dicom_libraries() -> None:
    """Settings of pydicom and pynetdicom that cost a transfer CPU time and buy it nothing.

    * pynetdicom's standard logging handlers format every DIMSE message (and its data set) for
      the log, whether or not the log keeps it: about a twentieth of a relay's CPU time. They
      are bound only when pynetdicom's DEBUG log is wanted. pynetdicom reads this when an
      association or a server is created, so this is called just before.
    * pydicom checks every value set on or read from a data set against its VR and only warns
      about what does not fit (about a tenth of a relay's CPU time, mostly pynetdicom building
      command sets). ADIT validates what users enter itself and handles values from a PACS
      that cannot be converted, so these checks are switched off.
    """
    wanted = logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)
    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if wanted else "none"
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE


class _HeldReactorCheckpoint:
    """Stands in for `Association._reactor_checkpoint` (a `threading.Event`)."""

    def __init__(self, assoc: Association) -> None:
        self._assoc = assoc
        self._condition = threading.Condition()
        self._flag = True
        self.reactor_waiting = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._condition:
            self._flag = True
            self._condition.notify_all()

    def clear(self) -> None:
        with self._condition:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Called by the reactor only: returns once the association is ending."""
        with self._condition:
            self.reactor_waiting = True
            try:
                while not self._should_wake():
                    self._condition.wait(_KILL_POLL_SECONDS)
            finally:
                self.reactor_waiting = False
        return True

    def _should_wake(self) -> bool:
        assoc = self._assoc
        if assoc._kill:
            return True
        try:
            return assoc.acse.is_aborted()
        except Exception:  # the DUL is being torn down; let the reactor see for itself
            return True


class _HeldReactorAssociation(Association):
    """An association whose reactor counts as paused exactly while it waits (see module doc)."""

    @property
    def _is_paused(self) -> bool:  # type: ignore[override]
        checkpoint = self._reactor_checkpoint
        waiting = isinstance(checkpoint, _HeldReactorCheckpoint) and checkpoint.reactor_waiting
        return waiting or not self.is_alive()

    @_is_paused.setter
    def _is_paused(self, value: bool) -> None:
        # pynetdicom's own bookkeeping is what races; the property above replaces it.
        pass


# PS3.8 9.2: Sta13 = waiting for the transport to close after an A-ABORT; Evt9 = a P-DATA
# request from the local user.
_AWAITING_CLOSE_AFTER_ABORT = "Sta13"
_P_DATA_REQUEST = "Evt9"


def _drop_late_messages(machine: StateMachine) -> None:
    """Makes the state machine drop messages queued for an association ADIT just aborted.

    When ADIT aborts a C-GET whose consumer stopped, pynetdicom may still queue the answer to
    a sub-operation that was under way; its transport thread then dies with InvalidEventError
    (P-DATA request in Sta13). There is nobody left to send to, so the message is dropped.
    """
    original = machine.do_action

    def do_action(event: str) -> None:
        if event == _P_DATA_REQUEST and machine.current_state == _AWAITING_CLOSE_AFTER_ABORT:
            return
        original(event)

    machine.do_action = do_action  # type: ignore[method-assign]


def hold_reactor(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler for requestor associations: keeps their reactor out of the way.

    Also shortens the transport thread's idle sleep (see ACTIVE_DUL_LOOP_DELAY_SECONDS) and
    drops messages queued after ADIT's own abort. Runs before the association is negotiated,
    so before the reactor loop starts.
    """
    assoc = event.assoc
    if not assoc.is_requestor or isinstance(assoc, _HeldReactorAssociation):
        return
    assoc.dul._run_loop_delay = ACTIVE_DUL_LOOP_DELAY_SECONDS
    _drop_late_messages(assoc.dul.state_machine)
    assoc.__class__ = _HeldReactorAssociation
    assoc._reactor_checkpoint = _HeldReactorCheckpoint(assoc)  # type: ignore[assignment]
