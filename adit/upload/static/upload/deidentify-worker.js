/*
 * A Web Worker that de-identifies files for the upload page (upload.js keeps a small pool).
 *
 * Reading a file's header, de-identifying it and writing the new one takes a few
 * milliseconds (the pixel data is not read: see `deidentifyFile`); in workers it runs on other
 * cores while the page sends. The logic is deidentify.js, loaded here as it is on the page
 * (the URLs of the scripts come from the page: static files may carry hashed names).
 *
 * Messages: {scripts} once (the URLs to load; answered {loaded: true} or {initError}), then
 * {init: {rules, secret, options}} for each upload (answered {ready: true} or {initError});
 * then {id, file} (a File) answered {id, header, pixelStart, pixelEnd} (see
 * `deidentifyFile` in deidentify.js; the header, an ArrayBuffer of a few KB, is transferred;
 * the pixel data is never read here) or {id, error}.
 */
/* global importScripts */
"use strict";

let ready = null;

self.onmessage = async (event) => {
  const message = event.data;
  if (message.scripts) {
    try {
      importScripts(...message.scripts);
      self.postMessage({ loaded: true });
    } catch (error) {
      self.postMessage({ initError: error.message || String(error) });
    }
    return;
  }
  if (message.init) {
    try {
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
    const result = await self.AditUpload.deidentifyFile(file, ready || null);
    self.postMessage({ id, ...result }, result.header ? [result.header] : []);
  } catch (error) {
    self.postMessage({ id, error: error.message || String(error) });
  }
};
