/*
 * De-identification of one DICOM file in the browser, before a byte of it is sent.
 *
 * The rule DATA come from the server (adit/upload/rules.py `browser_rules`, embedded in the
 * page with json_script): PS3.15 Table E.1-1 with the actions of the Basic Profile plus Retain
 * Longitudinal Temporal Information with Modified Dates, the safe free-text attributes, the
 * UID attributes that name kinds of things, the de-identification method to record. This file
 * ports only the LOGIC of adit/core/dicom/pseudonymizer.py (`Pseudonymizer._decide` and
 * `_resolve`); the server checks every file again with that very code (rules.check_instance).
 *
 * Where this port differs from the server-side pseudonymizer (on purpose):
 * - New UIDs are 2.25.<decimal of the first 128 bits of HMAC-SHA256(upload secret, UID)>
 *   (server: dicognito's "2." + 40 digits). Same original -> same new UID within one upload
 *   (and in a resumed upload: the secret is kept in this browser's localStorage).
 * - Dates are shifted by whole days, per original PatientID (HMAC of the secret and the ID,
 *   1 to 3650 days back); times are kept (server: dicognito's shift in hours, moving a time
 *   across midnight together with its date).
 * - Dummy names are ANON^<8 hex digits>, dummy IDs X<10 hex digits> (server: dicognito's
 *   made-up names and IDs). Neither carries anything of the original.
 * - Well-known UIDs are recognised by the DICOM root 1.2.840.10008 (server: pydicom's UID
 *   dictionary).
 * - "Clean" (only reached through options ADIT's upload does not use) removes the text
 *   instead of cleaning it (server: keeps it minus the identifying values it recognises).
 * - Instances that may carry burned-in text, and modalities left out by EXCLUDE_MODALITIES,
 *   are skipped with a reason (the server's InstanceTransformer leaves them out too).
 */
(function (global) {
  "use strict";

  const NORMAL = 0;
  const DUMMY = 1;
  const CLEAN = 2;
  const DATE_VRS = new Set(["DA", "DT", "TM"]);
  const LONG_TEXT_VRS = new Set(["ST", "LT", "UT", "UC", "UR"]);
  const WELL_KNOWN_UID_ROOT = "1.2.840.10008.";
  const MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10";
  const PATIENT_NAME = "00100010";
  const PATIENT_ID = "00100020";
  const PIXEL_DATA = "7FE00010";

  const encoder = new TextEncoder();

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function vrOf(tag, element) {
    let vr = element.vr;
    if (!vr || vr === "UN") {
      const dictionary = global.dcmjs.data.DicomMetaDictionary.dictionary;
      const entry = dictionary[`(${tag.slice(0, 4)},${tag.slice(4)})`];
      vr = entry && entry.vr && entry.vr.length === 2 ? entry.vr : null;
    }
    return vr;
  }

  function firstString(dict, tag) {
    const element = dict[tag];
    if (!element || !element.Value || !element.Value.length) return "";
    const value = element.Value[0];
    if (value && typeof value === "object" && "Alphabetic" in value) return value.Alphabetic || "";
    return value === null || value === undefined ? "" : String(value);
  }

  function shiftDate(text, days) {
    const match = /^(\d{4})(\d{2})(\d{2})(.*)$/.exec(text);
    if (!match) return null;
    const date = new Date(Date.UTC(+match[1], +match[2] - 1, +match[3]));
    if (Number.isNaN(date.getTime())) return null;
    date.setUTCDate(date.getUTCDate() - days);
    const y = String(date.getUTCFullYear()).padStart(4, "0");
    const m = String(date.getUTCMonth() + 1).padStart(2, "0");
    const d = String(date.getUTCDate()).padStart(2, "0");
    return `${y}${m}${d}${match[4]}`;
  }

  class Deidentifier {
    /**
     * @param {object} rules the server's rule data (browser_rules)
     * @param {CryptoKey} key HMAC-SHA256 key made from the upload's secret
     * @param {object} options pseudonym, trialProtocolId, trialProtocolName
     */
    constructor(rules, key, options) {
      this.rules = rules;
      this.key = key;
      this.pseudonym = options.pseudonym;
      this.trialProtocolId = options.trialProtocolId || "";
      this.trialProtocolName = options.trialProtocolName || "";
      this.identifyingVrs = new Set(rules.identifyingVrs);
      this.safeText = new Set(rules.safeTextTags);
      this.keepUids = new Set(rules.keepUidTags);
      this.excludeModalities = new Set(rules.excludeModalities);
      this.cache = new Map();
    }

    static async create(rules, secretHex, options) {
      if (!global.crypto || !global.crypto.subtle) {
        throw new Error(
          "This browser offers no Web Crypto here (ADIT must be opened over https): " +
            "files cannot be pseudonymized, so nothing is uploaded.",
        );
      }
      const bytes = new Uint8Array(secretHex.match(/../g).map((h) => parseInt(h, 16)));
      const key = await global.crypto.subtle.importKey(
        "raw",
        bytes,
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["sign"],
      );
      return new Deidentifier(rules, key, options);
    }

    static newSecret() {
      return hex(global.crypto.getRandomValues(new Uint8Array(32)));
    }

    async hmac(purpose, value) {
      const key = `${purpose}\u0000${value}`;
      let result = this.cache.get(key);
      if (result === undefined) {
        result = hex(await global.crypto.subtle.sign("HMAC", this.key, encoder.encode(key)));
        if (this.cache.size > 200000) this.cache.clear();
        this.cache.set(key, result);
      }
      return result;
    }

    async newUid(uid) {
      const digest = await this.hmac("uid", uid);
      return this.rules.uidRoot + BigInt("0x" + digest.slice(0, 32)).toString(10);
    }

    async dateShiftDays(patientId) {
      const digest = await this.hmac("date-shift", patientId);
      return (parseInt(digest.slice(0, 8), 16) % 3650) + 1;
    }

    /** Why a file is not uploaded at all (null: it is). */
    skipReason(dict, meta) {
      const sopClass = firstString(meta, "00020002") || firstString(dict, "00080016");
      if (sopClass === MEDIA_STORAGE_DIRECTORY) return "DICOMDIR (a media index, not an image)";
      const modality = firstString(dict, "00080060").toUpperCase();
      if (this.excludeModalities.has(modality)) {
        return `modality ${modality} is not uploaded (reports and presentation states name patients in free text)`;
      }
      const flag = firstString(dict, "00280301").trim().toUpperCase();
      if (flag === "YES") return "may carry burned-in identifying text (BurnedInAnnotation YES)";
      if (!flag && sopClass in this.rules.burnedInProneSopClasses) {
        return `may carry burned-in identifying text (${this.rules.burnedInProneSopClasses[sopClass]})`;
      }
      return null;
    }

    /** The table row's action for a tag (repeating groups included), or null. */
    rowAction(tag) {
      const action = this.rules.rows[tag];
      if (action !== undefined) return action;
      const group = parseInt(tag.slice(0, 4), 16);
      const element = parseInt(tag.slice(4), 16);
      const base = group & 0xff00;
      if (group >= 0x5000 && group <= 0x60ff && !(group & 1) && (base === 0x5000 || base === 0x6000)) {
        let any = null;
        for (const [rowBase, rowElement, rowAction] of this.rules.repeating) {
          if (rowBase !== base) continue;
          if (rowElement === element) return rowAction;
          if (rowElement === -1) any = rowAction;
        }
        return any;
      }
      return null;
    }

    /** Port of Pseudonymizer._decide. */
    decide(tag, vr, mode) {
      if (tag.slice(4) === "0000") return "X";
      const group = parseInt(tag.slice(0, 4), 16);
      if (group >= 0x6000 && group <= 0x60ff && !(group & 1)) {
        return this.resolve(this.rowAction("60003000"), vr, mode);
      }
      const action = this.rowAction(tag);
      if (action !== null) return this.resolve(action, vr, mode);
      if (vr === "SQ") return `SQ${mode}`;
      if (vr === "UI") return this.keepUids.has(tag) ? "K" : "U";
      if (DATE_VRS.has(vr)) {
        const generic = this.rules.genericDateAction;
        return this.resolve(generic === "X" && mode !== NORMAL ? "D" : generic, vr, mode);
      }
      if (this.identifyingVrs.has(vr)) {
        if (this.safeText.has(tag)) return "K";
        if (mode === DUMMY) return this.resolve("D", vr, mode);
        if (mode === CLEAN) return this.resolve("C", vr, mode);
        return "X";
      }
      if (vr === null) return "X";
      return "K";
    }

    /** Port of Pseudonymizer._resolve. */
    resolve(action, vr, mode) {
      if (action === "X/Z/U*") return vr === "SQ" ? `SQ${mode}` : "U";
      if (action === "Z/D") action = "Z";
      else if (action.startsWith("X")) return "X";
      if (action === "K") return vr === "SQ" ? `SQ${mode}` : "K";
      if (action === "Z") return "Z";
      if (action === "U") return vr === "UI" ? "U" : "Z";
      if (action === "D") {
        if (vr === "SQ") return `SQ${DUMMY}`;
        if (vr === "UI") return "U";
        if (vr === "PN") return "NAME";
        if (DATE_VRS.has(vr)) return `DUMMY_${vr}`;
        if (LONG_TEXT_VRS.has(vr)) return "REMOVED";
        if (["LO", "SH", "CS", "AE"].includes(vr)) return "ID";
        return "Z";
      }
      if (action === "C") {
        if (vr === "SQ") return `SQ${CLEAN}`;
        if (vr === "DA" || vr === "DT") return "SHIFT";
        if (vr === "TM") return "K";
        if (vr === "PN") return "NAME";
        if (this.identifyingVrs.has(vr)) return "X"; // see "Clean" at the top
        return "K";
      }
      throw new Error(`Unknown profile action ${action}`);
    }

    async walk(dict, mode, days) {
      for (const tag of Object.keys(dict).sort()) {
        const element = dict[tag];
        const group = parseInt(tag.slice(0, 4), 16);
        if (group & 1) {
          delete dict[tag]; // every private attribute, creators included
          continue;
        }
        const vr = vrOf(tag, element);
        const decision = this.decide(tag, vr, mode);
        if (decision === "K") continue;
        if (decision === "X") {
          delete dict[tag];
          continue;
        }
        if (decision === "Z") {
          element.Value = [];
          delete element._rawValue;
          continue;
        }
        if (decision.startsWith("SQ")) {
          for (const item of element.Value || []) await this.walk(item, +decision.slice(2), days);
          continue;
        }
        const values = element.Value || [];
        if (!values.length) continue;
        delete element._rawValue;
        if (vr && element.vr === "UN") element.vr = vr;
        if (decision === "U") {
          element.Value = await Promise.all(
            values.map((v) =>
              v === null || v === "" || String(v).startsWith(WELL_KNOWN_UID_ROOT) ? v : this.newUid(String(v)),
            ),
          );
        } else if (decision === "NAME") {
          element.Value = await Promise.all(
            values.map(async (v) => ({ Alphabetic: "ANON^" + (await this.hmac("name", JSON.stringify(v))).slice(0, 8).toUpperCase() })),
          );
        } else if (decision === "SHIFT") {
          element.Value = values.map((v) => shiftDate(String(v), days)).filter((v) => v !== null);
        } else if (decision.startsWith("DUMMY_")) {
          element.Value = [this.rules.dummyDates[decision.slice(6)]];
        } else if (decision === "REMOVED") {
          element.Value = ["REMOVED"];
        } else if (decision === "ID") {
          element.Value = await Promise.all(
            values.map(async (v) => "X" + (await this.hmac("id", String(v))).slice(0, 10).toUpperCase()),
          );
        } else {
          throw new Error(`Unknown decision ${decision}`);
        }
      }
    }

    /**
     * De-identify a parsed file (dcmjs DicomDict) in place.
     * @returns {Promise<object>} the new Study, Series and SOP Instance UIDs
     */
    async deidentify(dicomDict) {
      const dict = dicomDict.dict;
      const originalPatientId = firstString(dict, PATIENT_ID);
      const days = await this.dateShiftDays(originalPatientId);
      await this.walk(dict, NORMAL, days);
      dict[PATIENT_ID] = { vr: "LO", Value: [this.pseudonym] };
      dict[PATIENT_NAME] = { vr: "PN", Value: [{ Alphabetic: this.pseudonym }] };
      dict["00120062"] = { vr: "CS", Value: ["YES"] };
      dict["00120063"] = { vr: "LO", Value: this.rules.method.words.slice() };
      dict["00120064"] = {
        vr: "SQ",
        Value: this.rules.method.codes.map(([value, meaning]) => ({
          "00080100": { vr: "SH", Value: [value] },
          "00080102": { vr: "SH", Value: ["DCM"] },
          "00080104": { vr: "LO", Value: [meaning] },
        })),
      };
      dict["00280303"] = { vr: "CS", Value: [this.rules.method.temporal] };
      if (this.trialProtocolId) dict["00120020"] = { vr: "LO", Value: [this.trialProtocolId] };
      if (this.trialProtocolName) dict["00120021"] = { vr: "LO", Value: [this.trialProtocolName] };
      const meta = dicomDict.meta;
      for (const tag of this.rules.fileMetaIdentifying) delete meta[tag];
      const sopUid = firstString(dict, "00080018");
      if (meta["00020003"]) meta["00020003"] = { vr: "UI", Value: [sopUid] };
      return {
        studyUid: firstString(dict, "0020000D"),
        seriesUid: firstString(dict, "0020000E"),
        sopUid,
      };
    }
  }

  const IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2";
  const EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2";
  const DEFLATED_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99";
  const UNDEFINED_LENGTH = 0xffffffff;
  // Enough for the attributes before Pixel Data of nearly every file (a few KB); a file whose
  // header is longer is read whole.
  const HEADER_PREFIX_BYTES = 64 * 1024;

  /**
   * Where the top-level Pixel Data element ends (its items included when encapsulated), or -1
   * when `view` (a prefix of the file) does not reach that far, or null when it is malformed.
   */
  function pixelDataEnd(view, start, implicit) {
    if (start + 12 > view.byteLength) return -1;
    let offset;
    let length;
    if (implicit) {
      length = view.getUint32(start + 4, true);
      offset = start + 8;
    } else {
      const vr = String.fromCharCode(view.getUint8(start + 4), view.getUint8(start + 5));
      if (!["OB", "OW", "UN"].includes(vr)) return null;
      length = view.getUint32(start + 8, true);
      offset = start + 12;
    }
    if (length !== UNDEFINED_LENGTH) return offset + length;
    // Encapsulated: items (FFFE,E000) up to the sequence delimiter (FFFE,E0DD).
    for (;;) {
      if (offset + 8 > view.byteLength) return -1;
      const group = view.getUint16(offset, true);
      const element = view.getUint16(offset + 2, true);
      const itemLength = view.getUint32(offset + 4, true);
      if (group !== 0xfffe || itemLength === UNDEFINED_LENGTH) return null;
      if (element === 0xe0dd) return offset + 8;
      if (element !== 0xe000) return null;
      offset += 8 + itemLength;
    }
  }

  /**
   * Parse only what comes before the top-level Pixel Data of a file (or of a prefix of it).
   *
   * The pixel data is most of a file and carries nothing de-identification changes, so it is
   * neither decoded nor copied: the new file is the rewritten header followed by the original
   * Pixel Data element, byte for byte (`pixelStart`..`pixelEnd` of the file). Returns null
   * when that does not apply and the file must be parsed whole: no Pixel Data at the top
   * level, attributes after it (trailing padding, private groups), big endian or deflated
   * transfer syntaxes, a header longer than the prefix, anything dcmjs cannot read this way.
   *
   * @param {ArrayBuffer} buffer the file, or its first bytes
   * @param {number} fileSize the size of the whole file
   * @returns {{dicomDict: object, pixelStart: number, pixelEnd: number} | null}
   */
  function splitAtPixelData(buffer, fileSize) {
    const { DicomMessage, ReadBufferStream } = global.dcmjs.data;
    const view = new DataView(buffer);
    if (view.byteLength < 144) return null;
    if (String.fromCharCode(...new Uint8Array(buffer, 128, 4)) !== "DICM") return null;
    // (0002,0000) File Meta Information Group Length, UL, explicit VR little endian.
    if (view.getUint16(132, true) !== 0x0002 || view.getUint16(134, true) !== 0x0000) return null;
    const datasetStart = 144 + view.getUint32(140, true);
    if (datasetStart > view.byteLength) return null;
    try {
      const dicomDict = DicomMessage.readFile(buffer.slice(0, datasetStart));
      const syntax = firstString(dicomDict.meta, "00020010");
      if (!syntax || syntax === EXPLICIT_BIG_ENDIAN || syntax === DEFLATED_LITTLE_ENDIAN) return null;
      const stream = new ReadBufferStream(buffer, null, { start: datasetStart, noCopy: true });
      // dcmjs stops at untilTag at the top level only (items of sequences, e.g. an Icon Image
      // Sequence's own Pixel Data, are read whole), after reading the tag's 4 bytes.
      const dict = DicomMessage._read(stream, DicomMessage._normalizeSyntax(syntax), {
        untilTag: PIXEL_DATA,
      });
      if (!(PIXEL_DATA in dict)) return null;
      delete dict[PIXEL_DATA];
      const pixelStart = stream.offset - 4;
      if (view.getUint16(pixelStart, true) !== 0x7fe0 || view.getUint16(pixelStart + 2, true) !== 0x0010) {
        return null;
      }
      const pixelEnd = pixelDataEnd(view, pixelStart, syntax === IMPLICIT_LITTLE_ENDIAN);
      if (pixelEnd === null || pixelEnd !== fileSize) return null; // -1: not in the prefix
      dicomDict.dict = dict;
      return { dicomDict, pixelStart, pixelEnd };
    } catch {
      return null; // e.g. the prefix ends inside the header
    }
  }

  /**
   * Read, de-identify and write one File as it is sent.
   *
   * Returns the new header (everything before Pixel Data, or the whole new file) and the range
   * of the original file that follows it unchanged (`pixelEnd` 0: none). The caller sends
   * `new Blob([header, file.slice(pixelStart, pixelEnd)])`: the pixel data goes from the disk
   * to the socket without passing through JavaScript. Without a de-identifier (a group that may
   * upload unpseudonymized data) the file is sent as it is.
   *
   * @param {File} file
   * @param {Deidentifier|null} deidentifier
   * @returns {Promise<{header: ArrayBuffer|null, pixelStart: number, pixelEnd: number}>}
   */
  async function deidentifyFile(file, deidentifier) {
    if (!deidentifier) return { header: null, pixelStart: 0, pixelEnd: file.size };
    let buffer = await file.slice(0, Math.min(file.size, HEADER_PREFIX_BYTES)).arrayBuffer();
    let split = splitAtPixelData(buffer, file.size);
    if (!split && buffer.byteLength < file.size) {
      buffer = await file.arrayBuffer();
      split = splitAtPixelData(buffer, file.size);
    }
    if (split) {
      await deidentifier.deidentify(split.dicomDict);
      return { header: split.dicomDict.write(), pixelStart: split.pixelStart, pixelEnd: split.pixelEnd };
    }
    const parsed = parse(buffer);
    if (parsed.skip) throw new Error(parsed.skip);
    await deidentifier.deidentify(parsed.dicomDict);
    return { header: parsed.dicomDict.write(), pixelStart: 0, pixelEnd: 0 };
  }

  /** The parts of a de-identified file as they are sent (for `new Blob(parts)`). */
  function fileParts(file, result) {
    const parts = [];
    if (result.header) parts.push(result.header);
    if (result.pixelEnd > result.pixelStart) parts.push(file.slice(result.pixelStart, result.pixelEnd));
    return parts;
  }

  /** Parse a file's bytes: {dicomDict} or {skip: reason}. */
  function parse(buffer, options) {
    const bytes = new Uint8Array(buffer, 0, Math.min(buffer.byteLength, 132));
    if (bytes.length < 132 || String.fromCharCode(...bytes.slice(128, 132)) !== "DICM") {
      return { skip: "not DICOM (no DICM header)" };
    }
    try {
      return { dicomDict: global.dcmjs.data.DicomMessage.readFile(buffer, options || {}) };
    } catch (error) {
      return { skip: `unreadable DICOM: ${error && error.message ? error.message : error}` };
    }
  }

  const api = { Deidentifier, parse, firstString, splitAtPixelData, deidentifyFile, fileParts };
  global.AditUpload = Object.assign(global.AditUpload || {}, api);
  if (typeof module !== "undefined") module.exports = api;
})(typeof window !== "undefined" ? window : globalThis);
