/*
 * A Web Worker that de-identifies files for the upload page (upload.js keeps a small pool).
 *
 * Parsing, de-identifying and writing a file with dcmjs takes tens of milliseconds; on the
 * page's one JavaScript thread that work and the sending took turns. In workers it runs on
 * other cores while the page sends. The logic is deidentify.js, loaded here as it is on the
 * page (the URLs of the scripts come from the page: static files may carry hashed names).
 *
 * Messages: {init: {scripts, rules, secret, options}} once (answered {ready: true} or
 * {initError}); then {id, file} (a File) answered {id, body} (an ArrayBuffer, transferred) or
 * {id, error}.
 */
/* global importScripts */
"use strict";

let ready = null;

self.onmessage = async (event) => {
  const message = event.data;
  if (message.init) {
    try {
      importScripts(...message.init.scripts);
      const { rules, secret, options } = message.init;
      ready = secret ? await self.AditUpload.Deidentifier.create(rules, secret, options) : false;
      self.postMessage({ ready: true });
    } catch (error) {
      self.postMessage({ initError: error.message || String(error) });
    }
    return;
  }
  const { id, file } = message;
  try {
    if (ready === null) throw new Error("the worker was not initialised");
    const parsed = self.AditUpload.parse(await file.arrayBuffer());
    if (parsed.skip) throw new Error(parsed.skip);
    if (ready) await ready.deidentify(parsed.dicomDict);
    const body = parsed.dicomDict.write();
    self.postMessage({ id, body }, [body]);
  } catch (error) {
    self.postMessage({ id, error: error.message || String(error) });
  }
};
