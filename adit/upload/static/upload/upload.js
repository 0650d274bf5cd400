/*
 * The upload page (Alpine.js component "aditUpload").
 *
 * 1. Pick: drop files/folders (nested folders through webkitGetAsEntry) or choose them.
 *    Every file is read and parsed here (dcmjs, up to the pixel data) for the summary;
 *    files that are not DICOM, unreadable, DICOMDIR or left out by the rules are listed
 *    as skipped with the reason.
 * 2. Start: the job is created (or, for the same files, destination and pseudonym picked
 *    again, the earlier job is resumed: its id and the upload's secret are kept in
 *    localStorage under a fingerprint of the files). The server says which SOP Instance UIDs
 *    it holds; those files are not sent again.
 * 3. Send: PARALLEL requests, each of a batch of files (up to BATCH_FILES, BATCH_BYTES),
 *    de-identified in a pool of Web Workers (deidentify-worker.js; without workers on the
 *    page): a worker reads only a file's header (everything before Pixel Data), de-identifies
 *    it (deidentify.js) and writes the new header; the body is a Blob of the new headers and
 *    slices of the files from Pixel Data on, so the pixel data goes from the disk to the
 *    socket unread by JavaScript. A batch is POSTed as multipart/related (a single file as
 *    application/dicom); the server answers per file. Network errors, 5xx, 408 and 429 are
 *    retried with exponential backoff; a refusal (4xx) is shown with the server's reason.
 *    ADIT hands what it received to a worker every few dozen files, so the destination
 *    stores while the page still sends.
 * 4. Commit: when every file is held, the job is committed and a worker stores it.
 *
 * Nothing identifying is sent: not the file names (paths stay in the page), not the original
 * UIDs (the held-check compares new UIDs), not the original PatientID.
 */
(function () {
  "use strict";

  const PARALLEL = 4;
  const MAX_ATTEMPTS = 6;
  const BATCH_FILES = 16;
  const BATCH_BYTES = 8 * 1024 * 1024;
  const STORAGE_PREFIX = "adit-upload:";
  const PIXEL_DATA = "7FE00010";
  const HEADER_PREFIX = 64 * 1024;

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  async function sha256Hex(text) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function fileOf(entry) {
    return new Promise((resolve, reject) => entry.file(resolve, reject));
  }

  function readBatch(reader) {
    return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
  }

  async function walkEntry(entry, prefix, out) {
    if (entry.isFile) {
      out.push({ file: await fileOf(entry), path: prefix + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await readBatch(reader); // at most 100 entries per call
        if (!batch.length) break;
        for (const child of batch) await walkEntry(child, `${prefix}${entry.name}/`, out);
      }
    }
  }

  /**
   * A file parsed up to its Pixel Data, for the summary: from its first HEADER_PREFIX bytes
   * when they hold everything before Pixel Data (nearly always), else from the whole file.
   */
  async function readHeader(file) {
    const prefix = await file.slice(0, Math.min(file.size, HEADER_PREFIX)).arrayBuffer();
    const parsed = window.AditUpload.parse(prefix, { untilTag: PIXEL_DATA });
    const complete = parsed.skip
      ? parsed.skip.startsWith("not DICOM") // decided by the first 132 bytes
      : PIXEL_DATA in parsed.dicomDict.dict;
    if (complete || prefix.byteLength >= file.size) return parsed;
    return window.AditUpload.parse(await file.arrayBuffer(), { untilTag: PIXEL_DATA });
  }

  /** POST with upload progress; resolves {status, body} (never rejects on HTTP errors). */
  function post(url, body, headers, onProgress, registerAbort) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => onProgress && onProgress(event.loaded);
      xhr.onload = () => {
        let parsed = {};
        try {
          parsed = JSON.parse(xhr.responseText || "{}");
        } catch {
          parsed = { error: `HTTP ${xhr.status}` };
        }
        resolve({ status: xhr.status, body: parsed });
      };
      xhr.onerror = () => reject(new Error("network error"));
      xhr.onabort = () => reject(new DOMException("stopped", "AbortError"));
      if (registerAbort) registerAbort(() => xhr.abort());
      xhr.send(body);
    });
  }

  /**
   * Web Workers that read, de-identify and write files (deidentify-worker.js), each file on
   * the least busy worker. `open` resolves when every worker has loaded the scripts (done as
   * soon as files are picked, so that Upload does not wait for it); `configure` gives them the
   * upload's rules, secret and pseudonym.
   */
  class DeidentifierPool {
    constructor(workers) {
      this.workers = workers.map((worker) => ({ worker, busy: 0, control: null }));
      this.waiting = new Map();
      this.nextId = 0;
      for (const entry of this.workers) {
        entry.worker.onmessage = (event) => {
          const { id, error } = event.data;
          if (id === undefined) {
            // The answer to loading the scripts or to `configure`.
            const control = entry.control;
            entry.control = null;
            if (!control) return;
            if (event.data.initError !== undefined) control.reject(new Error(event.data.initError));
            else control.resolve();
            return;
          }
          const settle = this.waiting.get(id);
          if (!settle) return;
          this.waiting.delete(id);
          entry.busy--;
          if (error !== undefined) settle.reject(new Error(error));
          else settle.resolve(event.data);
        };
        entry.worker.onerror = (event) => {
          const control = entry.control;
          entry.control = null;
          if (control) control.reject(new Error(event.message || "worker failed"));
        };
      }
    }

    static async open(size) {
      const app = document.getElementById("upload-app");
      const scripts = app.dataset.workerScripts.split(" ").map((src) => new URL(src, location.href).href);
      const workers = [];
      for (let i = 0; i < size; i++) workers.push(new Worker(app.dataset.workerUrl));
      const pool = new DeidentifierPool(workers);
      try {
        await pool.control({ scripts });
      } catch (error) {
        pool.close();
        throw error;
      }
      return pool;
    }

    control(message) {
      return Promise.all(
        this.workers.map(
          (entry) =>
            new Promise((resolve, reject) => {
              entry.control = { resolve, reject };
              entry.worker.postMessage(message);
            }),
        ),
      );
    }

    /** The upload's {rules, secret, options} (secret null: files are sent as they are). */
    configure(init) {
      return this.control({ init });
    }

    /** The de-identified file: {header, pixelStart, pixelEnd} (see deidentifyFile). */
    run(file) {
      const entry = this.workers.reduce((least, candidate) => (candidate.busy < least.busy ? candidate : least));
      const id = this.nextId++;
      entry.busy++;
      return new Promise((resolve, reject) => {
        this.waiting.set(id, { resolve, reject });
        entry.worker.postMessage({ id, file });
      });
    }

    close() {
      for (const { worker } of this.workers) worker.terminate();
      for (const { reject } of this.waiting.values()) reject(new Error("stopped"));
      this.waiting.clear();
    }
  }

  const files = new Map(); // path -> File (kept out of Alpine's reactive proxies)
  let poolLoading = null; // Promise of the DeidentifierPool (or null when there is none)

  function component() {
    return {
      rules: JSON.parse(document.getElementById("upload-rules").textContent),
      limits: JSON.parse(document.getElementById("upload-limits").textContent),
      dragging: false,
      reading: false,
      pickedCount: 0,
      readCount: 0,
      summaryReady: false,
      summary: { patients: 0, studies: 0, series: 0, instances: 0, bytes: 0 },
      skipped: [],
      queue: [],
      tooLarge: "",
      error: "",
      resumeNote: "",
      jobId: null,
      jobUrl: "",
      sending: false,
      stopped: false,
      finished: false,
      finishedText: "",
      startedAt: 0,
      sentBytes: 0,
      throughput: 0,
      aborts: new Set(),

      get canStart() {
        return this.summaryReady && this.queue.length > 0 && !this.sending && !this.reading && !this.tooLarge;
      },
      init() {
        // Leaving the page mid-upload stops it: the browser asks first. (A page that is gone
        // all the same is ended by the server after UPLOAD_ABANDONED_AFTER_MINUTES.)
        window.addEventListener("beforeunload", (event) => {
          if (!this.sending) return;
          event.preventDefault();
          event.returnValue = "";
        });
      },
      get doneCount() {
        return this.queue.filter((i) => i.state === "done" || i.state === "held").length;
      },
      get heldCount() {
        return this.queue.filter((i) => i.state === "held").length;
      },
      get failedCount() {
        return this.queue.filter((i) => i.state === "failed").length;
      },
      get overallPercent() {
        const total = this.summary.bytes || 1;
        let done = 0;
        for (const item of this.queue) {
          if (item.state === "done" || item.state === "held") done += item.size;
          else if (item.state === "sending") done += (item.size * item.progress) / 100;
        }
        return Math.min(100, Math.round((100 * done) / total));
      },
      get timeLeft() {
        if (!this.throughput) return Infinity;
        return ((100 - this.overallPercent) / 100) * this.summary.bytes / this.throughput;
      },
      get visibleQueue() {
        // The files that need attention first (being sent, failed, waiting), then the others;
        // at most 100 rows, however large the upload.
        const shown = [];
        for (const states of [["sending", "retrying", "failed"], ["pending"], ["done", "held"]]) {
          for (const item of this.queue) {
            if (shown.length >= 100) return shown;
            if (states.includes(item.state)) shown.push(item);
          }
        }
        return shown;
      },

      formatBytes(bytes) {
        if (!bytes) return "0 B";
        const units = ["B", "KB", "MB", "GB", "TB"];
        const exponent = Math.min(units.length - 1, Math.floor(Math.log(bytes) / Math.log(1024)));
        return `${(bytes / 1024 ** exponent).toFixed(exponent ? 1 : 0)} ${units[exponent]}`;
      },
      formatSeconds(seconds) {
        if (!Number.isFinite(seconds)) return "…";
        if (seconds < 60) return `${Math.ceil(seconds)} s`;
        return `${Math.floor(seconds / 60)} min ${Math.ceil(seconds % 60)} s`;
      },
      csrf() {
        return document.querySelector("#upload-form [name=csrfmiddlewaretoken]").value;
      },
      field(name) {
        return document.getElementById(`upload-${name}`);
      },

      // --- pick and preview ------------------------------------------------------------------

      async drop(event) {
        this.dragging = false;
        // Entries must be taken before the first await: the DataTransfer empties after it.
        const entries = [...event.dataTransfer.items]
          .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
          .filter(Boolean);
        const picked = [];
        if (entries.length) {
          for (const entry of entries) await walkEntry(entry, "", picked);
        } else {
          for (const file of event.dataTransfer.files) picked.push({ file, path: file.name });
        }
        await this.read(picked);
      },

      async choose(event) {
        const picked = [...event.target.files].map((file) => ({
          file,
          path: file.webkitRelativePath || file.name,
        }));
        event.target.value = "";
        await this.read(picked);
      },

      async read(picked) {
        if (this.sending) return;
        this.reset();
        this.loadPool();
        this.reading = true;
        this.pickedCount = picked.length;
        const patients = new Set();
        const studies = new Set();
        const series = new Set();
        const helper = new window.AditUpload.Deidentifier(this.rules, null, { pseudonym: "" });
        const items = [];
        let next = 0;
        const readOne = async () => {
          while (next < picked.length) {
            const { file, path } = picked[next++];
            let parsed;
            try {
              parsed = await readHeader(file);
            } catch (error) {
              this.skipped.push({ path, reason: `unreadable: ${error.message || error}` });
              this.readCount++;
              continue;
            }
            this.readCount++;
            if (parsed.skip) {
              this.skipped.push({ path, reason: parsed.skip });
              continue;
            }
            const { dict, meta } = parsed.dicomDict;
            const reason = helper.skipReason(dict, meta);
            if (reason) {
              this.skipped.push({ path, reason });
              continue;
            }
            const get = (tag) => window.AditUpload.firstString(dict, tag);
            const sop = get("00080018");
            const study = get("0020000D");
            const seriesUid = get("0020000E");
            if (!sop || !study || !seriesUid) {
              this.skipped.push({ path, reason: "unreadable: no SOP Instance, Study or Series UID" });
              continue;
            }
            if (items.some((item) => item.originalSop === sop)) {
              this.skipped.push({ path, reason: "the same instance (SOP Instance UID) as another file" });
              continue;
            }
            patients.add(get("00100020"));
            studies.add(study);
            series.add(seriesUid);
            files.set(path, file);
            items.push({ path, size: file.size, originalSop: sop, newSop: "", state: "pending", progress: 0, message: "", attempts: 0 });
          }
        };
        files.clear();
        await Promise.all(Array.from({ length: PARALLEL }, readOne));
        this.queue = items;
        this.summary = {
          patients: patients.size,
          studies: studies.size,
          series: series.size,
          instances: items.length,
          bytes: items.reduce((sum, item) => sum + item.size, 0),
        };
        const tooBig = items.filter((item) => item.size > this.limits.maxFileSize);
        if (this.summary.bytes > this.limits.maxJobSize) {
          this.tooLarge = `The files add up to ${this.formatBytes(this.summary.bytes)}; one upload may hold at most ${this.formatBytes(this.limits.maxJobSize)}. Upload the folder in parts.`;
        } else if (tooBig.length) {
          this.tooLarge = `${tooBig.length} file(s) are larger than ${this.formatBytes(this.limits.maxFileSize)}, the most one file may be (e.g. ${tooBig[0].path}).`;
        }
        this.reading = false;
        this.summaryReady = true;
      },

      reset() {
        Object.assign(this, {
          summaryReady: false,
          skipped: [],
          queue: [],
          tooLarge: "",
          error: "",
          resumeNote: "",
          jobId: null,
          jobUrl: "",
          finished: false,
          readCount: 0,
          throughput: 0,
        });
      },

      // --- job: create or resume --------------------------------------------------------------

      async fingerprint() {
        const uids = this.queue.map((item) => item.originalSop).sort().join("\n");
        return sha256Hex(`${this.field("destination").value}\n${this.field("pseudonym").value.trim()}\n${uids}`);
      },

      async openJob() {
        const key = STORAGE_PREFIX + (await this.fingerprint());
        const saved = JSON.parse(localStorage.getItem(key) || "null");
        if (saved) {
          const response = await fetch(`/upload/jobs/${saved.job}/instances/`, { credentials: "same-origin" });
          if (response.ok) {
            const body = await response.json();
            this.resumeNote = `Continuing upload job #${body.job}: these files were picked for it before.`;
            return { job: body, secret: saved.secret, held: new Set(body.sop_instance_uids) };
          }
        }
        const form = new FormData(document.getElementById("upload-form"));
        form.set("total_size", String(this.summary.bytes));
        const response = await fetch("/upload/jobs/new/", {
          method: "POST",
          body: form,
          credentials: "same-origin",
          headers: { "X-CSRFToken": this.csrf() },
        });
        const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
        if (!response.ok) throw new Error(body.error || `The job could not be created (HTTP ${response.status}).`);
        const secret = window.AditUpload.Deidentifier.newSecret();
        localStorage.setItem(key, JSON.stringify({ job: body.job, secret }));
        return { job: body, secret, held: new Set() };
      },

      // --- send -------------------------------------------------------------------------------

      /** Start the de-identification workers (they load dcmjs) before Upload is pressed. */
      loadPool() {
        if (poolLoading || typeof Worker === "undefined") return;
        const size = Math.max(1, Math.min(4, navigator.hardwareConcurrency || 2));
        poolLoading = DeidentifierPool.open(size).catch((error) => {
          // The page de-identifies the files itself then (the same code, one at a time).
          console.warn("Upload: no de-identification workers, using the page:", error);
          return null;
        });
      },

      async openPool(secret, options) {
        this.loadPool();
        const pool = poolLoading ? await poolLoading : null;
        if (!pool) return null;
        try {
          // The rules as plain data (this.rules is Alpine's proxy, which a worker cannot get).
          const rules = JSON.parse(document.getElementById("upload-rules").textContent);
          await pool.configure({ rules, secret, options: { ...options } });
          return pool;
        } catch (error) {
          console.warn("Upload: no de-identification workers, using the page:", error);
          return null;
        }
      },

      async start() {
        this.error = "";
        this.stopped = false;
        this.finished = false;
        this.sending = true;
        let pool = null;
        try {
          const { job, secret, held } = await this.openJob();
          this.jobId = job.job;
          this.jobUrl = job.job_url;
          const options = {
            pseudonym: job.pseudonym,
            trialProtocolId: this.field("trial-protocol-id").value.trim(),
            trialProtocolName: this.field("trial-protocol-name").value.trim(),
          };
          const deidentifier = job.pseudonym
            ? await window.AditUpload.Deidentifier.create(this.rules, secret, options)
            : null;
          pool = await this.openPool(job.pseudonym ? secret : null, options);
          // Which files the job holds already (a resumed upload): by their new SOP Instance UIDs.
          const open = this.queue.filter((item) => item.state !== "done" && item.state !== "held");
          const newSops = held.size && deidentifier
            ? await Promise.all(open.map((item) => deidentifier.newUid(item.originalSop)))
            : open.map((item) => item.originalSop);
          open.forEach((item, index) => {
            if (held.has(newSops[index])) {
              Object.assign(item, { state: "held", progress: 100, message: "already held by ADIT" });
            } else {
              Object.assign(item, { state: "pending", progress: 0, message: "", attempts: 0 });
            }
          });
          this.startedAt = performance.now();
          this.sentBytes = 0;
          let next = 0;
          const pending = this.queue.filter((item) => item.state === "pending");
          const takeBatch = () => {
            // A batch: a few MB of files in one request (per-request costs are paid once).
            const batch = [];
            let bytes = 0;
            while (next < pending.length && batch.length < BATCH_FILES && (!batch.length || bytes + pending[next].size <= BATCH_BYTES)) {
              bytes += pending[next].size;
              batch.push(pending[next++]);
            }
            return batch.length ? batch : null;
          };
          const sender = async () => {
            let batch = takeBatch();
            let prepared = batch ? this.prepareBatch(batch, deidentifier, pool) : null;
            while (prepared && !this.stopped) {
              const ready = await prepared;
              // The next batch is pseudonymized while this one is on its way.
              batch = this.stopped ? null : takeBatch();
              prepared = batch ? this.prepareBatch(batch, deidentifier, pool) : null;
              if (ready) await this.sendPrepared(ready);
            }
          };
          await Promise.all(Array.from({ length: PARALLEL }, sender));
          if (this.stopped) {
            this.resumeNote = "Stopped. Press Resume upload to send the rest (nothing is sent twice).";
            return;
          }
          if (this.failedCount) {
            this.error = `${this.failedCount} file(s) were refused or failed; see the list. Press Resume upload to try them again.`;
            return;
          }
          await this.commit();
        } catch (error) {
          this.error = error.message || String(error);
        } finally {
          this.sending = false;
          for (const item of this.queue) {
            if (item.state === "sending" || item.state === "retrying") {
              Object.assign(item, { state: "pending", progress: 0, message: "waiting (stopped)" });
            }
          }
        }
      },

      /** The batch's request body (a Blob) and its files, pseudonymized; null: none left. */
      async prepareBatch(batch, deidentifier, pool) {
        // Pseudonymize each file of the batch: in the workers side by side, else on the page
        // one at a time. What comes back is a new header per file; the pixel data stays in
        // the file on disk until the browser sends it.
        const parts = [];
        const pseudonymize = (item) => {
          const file = files.get(item.path);
          return pool ? pool.run(file) : window.AditUpload.deidentifyFile(file, deidentifier);
        };
        for (const item of batch) Object.assign(item, { state: "sending", progress: 0, message: "pseudonymizing" });
        const settled = pool ? await Promise.allSettled(batch.map(pseudonymize)) : null;
        for (const [index, item] of batch.entries()) {
          try {
            let result;
            if (settled) {
              if (settled[index].status === "rejected") throw settled[index].reason;
              result = settled[index].value;
            } else {
              result = await pseudonymize(item);
            }
            parts.push({ item, parts: window.AditUpload.fileParts(files.get(item.path), result) });
          } catch (error) {
            Object.assign(item, { state: "failed", message: `not pseudonymized: ${error.message || error}` });
          }
        }
        if (!parts.length) return null;
        // A Blob of the new headers and slices of the files: the browser streams it from the
        // disk, nothing of the pixel data is copied through JavaScript (an 8 MB Uint8Array
        // body cost the page more than everything else).
        let body;
        let contentType;
        if (parts.length === 1) {
          body = new Blob(parts[0].parts);
          contentType = "application/dicom";
        } else {
          const boundary = `adit-upload-${window.AditUpload.Deidentifier.newSecret().slice(0, 24)}`;
          const chunks = [];
          for (const part of parts) {
            chunks.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, ...part.parts, "\r\n");
          }
          chunks.push(`--${boundary}--\r\n`);
          body = new Blob(chunks);
          contentType = `multipart/related; type="application/dicom"; boundary=${boundary}`;
        }
        return { body, contentType, items: parts.map((part) => part.item) };
      },

      async sendPrepared({ body, contentType, items }) {
        const size = body.size;
        let attempts = 0;
        let lastShown = 0;
        for (;;) {
          if (this.stopped) return;
          attempts++;
          for (const item of items) item.message = attempts > 1 ? `sending (attempt ${attempts})` : "sending";
          let abort = null;
          let problem = "";
          try {
            const response = await post(
              `/upload/jobs/${this.jobId}/instances/`,
              body,
              { "Content-Type": contentType, "X-CSRFToken": this.csrf() },
              (loaded) => {
                // At most four page updates a second: re-rendering on every progress event
                // of every request costs the page more than the sending itself.
                const now = performance.now();
                if (now - lastShown < 250 && loaded < size) return;
                lastShown = now;
                const percent = Math.round((100 * loaded) / size);
                for (const item of items) item.progress = percent;
                this.updateThroughput();
              },
              (cancel) => {
                abort = cancel;
                this.aborts.add(cancel);
              },
            );
            const answers = items.length === 1 && response.status !== 200 && response.status !== 201
              ? null
              : items.length === 1
                ? [{ status: response.status, ...response.body }]
                : response.status === 200 ? response.body.results : null;
            if (answers) {
              items.forEach((item, index) => this.settle(item, answers[index] || { status: 0, error: "no answer" }));
              return;
            }
            if (![408, 429].includes(response.status) && response.status < 500) {
              for (const item of items) {
                Object.assign(item, { state: "failed", message: response.body.error || `refused (HTTP ${response.status})` });
              }
              return;
            }
            problem = response.body.error || `HTTP ${response.status}`;
          } catch (error) {
            if (error.name === "AbortError") return;
            problem = error.message || String(error);
          } finally {
            if (abort) this.aborts.delete(abort);
          }
          if (attempts >= MAX_ATTEMPTS) {
            for (const item of items) Object.assign(item, { state: "failed", message: `failed after ${attempts} attempts: ${problem}` });
            return;
          }
          const delay = Math.min(30000, 1000 * 2 ** (attempts - 1)) * (0.75 + Math.random() / 2);
          for (const item of items) {
            Object.assign(item, { state: "retrying", message: `${problem} — retrying in ${Math.round(delay / 1000)} s` });
          }
          await sleep(delay);
          for (const item of items) item.state = "sending";
        }
      },

      settle(item, answer) {
        if (answer.status === 200 || answer.status === 201) {
          this.sentBytes += item.size;
          Object.assign(item, {
            state: answer.status === 200 ? "held" : "done",
            progress: 100,
            message: answer.status === 200 ? "already held by ADIT" : "received by ADIT",
          });
        } else {
          Object.assign(item, { state: "failed", message: answer.error || `refused (HTTP ${answer.status})` });
        }
        this.updateThroughput();
      },

      updateThroughput() {
        const seconds = (performance.now() - this.startedAt) / 1000;
        let bytes = this.sentBytes;
        for (const item of this.queue) if (item.state === "sending") bytes += (item.size * item.progress) / 100;
        this.throughput = seconds > 0.2 ? bytes / seconds : 0;
      },

      stop() {
        this.stopped = true;
        for (const cancel of this.aborts) cancel();
        this.aborts.clear();
      },

      async commit() {
        const response = await fetch(`/upload/jobs/${this.jobId}/commit/`, {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-CSRFToken": this.csrf() },
        });
        const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
        if (!response.ok) throw new Error(body.error || `The upload could not be committed (HTTP ${response.status}).`);
        this.finished = true;
        const stored = this.queue.filter((i) => i.state === "done").length;
        this.finishedText = `Upload job #${body.job}: ${stored} file(s) sent, ${this.heldCount} already stored. ` +
          // Files sent now are stored by a worker, from the first few dozen on (some may be
          // stored already); a commit may also queue files sent before a stop.
          (stored || body.new_tasks ? `A worker stores them on ${body.destination}.` : "Nothing new to store.");
      },
    };
  }

  document.addEventListener("alpine:init", () => window.Alpine.data("aditUpload", component));
})();
