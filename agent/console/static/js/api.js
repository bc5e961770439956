// The public /v1 API with the key the person typed. The key lives in sessionStorage (gone when the tab
// closes) and travels only in the Authorization header, never in a URL.

const KEY_NAME = "lifelong.apiKey";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY_NAME),
  set: (value) => sessionStorage.setItem(KEY_NAME, value),
  forget: () => sessionStorage.removeItem(KEY_NAME),
};

// Called with the API's sentence whenever the server refuses the key, so the page can ask for another.
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${key.get() ?? ""}`, ...extra };
}

async function failure(response) {
  let message = `the server answered ${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    if (body?.error?.message) ({ message, code } = body.error);
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) onUnauthorized(message);
  return new ApiError(response.status, message, code);
}

export async function request(method, path, { json, query, signal } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(url, init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

export const get = (path, query) => request("GET", path, { query });
export const post = (path, json) => request("POST", path, { json });
export const del = (path, query) => request("DELETE", path, { query });

// Server-Sent Events over a POST: EventSource cannot send an Authorization header, so the stream is
// read with fetch. `onEvent(name, data)` gets each event; aborting `signal` stops reading.
export async function streamEvents(path, json, onEvent, signal) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(json),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

// A document upload with progress of the bytes sent: fetch cannot report an upload's progress,
// XMLHttpRequest can. Resolves with the document the API created.
export function upload(path, body, contentType, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", `Bearer ${key.get() ?? ""}`);
    xhr.setRequestHeader("Content-Type", contentType);
    xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded, event.total));
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // keep null
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      const message = body?.error?.message ?? `the server answered ${xhr.status}`;
      if (xhr.status === 401) onUnauthorized(message);
      reject(new ApiError(xhr.status, message, body?.error?.code));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "the upload could not reach the server")));
    xhr.send(body);
  });
}
