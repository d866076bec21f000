// Orpheus TTS playground: streams POST /v1/tts/stream (protocol v1, NDJSON frames)
// and plays the PCM while it arrives. Plain JavaScript, no dependencies.
"use strict";

const SAMPLE_RATE_HZ = 24000;
const JITTER_BUFFER_MS = 200; // audio held back before playback starts (the SDK guide: 150-300 ms)
const SCHEDULE_LEAD_S = 0.03; // how far ahead of "now" a late chunk is scheduled after an underrun
const MIN_WAVE_WINDOW_S = 6; // the waveform spans at least this long, so short audio is not stretched
const PEAK_BLOCK_SAMPLES = 120; // one min/max pair per 5 ms of audio for drawing
const KEY_STORAGE = "orpheus.apiKey";
const VOICE_STORAGE = "orpheus.voice";

const $ = (id) => document.getElementById(id);

// What the page knows about the current stream; also read by the browser test.
const state = {
  samples: 0,
  chunks: 0,
  ttfaMs: null,
  rtf: null,
  serverRtf: null,
  serverTtfbMs: null,
  done: false,
  error: null,
  requestId: null,
  underruns: 0,
  voices: [],
  running: false,
  lastMetrics: null,
  serverInfo: {},
};
window.__orpheus = state;

let audioCtx = null;
let controller = null; // AbortController of the running request
let pcmParts = []; // Uint8Array pieces of little-endian int16 PCM, for the WAV download
let peaks = []; // [min, max] per PEAK_BLOCK_SAMPLES, for the waveform
let peakCarry = null; // samples of an incomplete peak block
let sources = [];
let pending = []; // Float32Arrays waiting for the jitter buffer to fill
let pendingSamples = 0;
let playStart = null; // AudioContext time at which sample 0 plays
let nextTime = 0; // AudioContext time at which the next chunk starts
let scheduledSamples = 0;
let sentAt = 0;
let drawQueued = false;

// ---------------------------------------------------------------- voices

async function loadVoices() {
  const select = $("voice");
  try {
    const response = await fetch("v1/voices", { headers: authHeaders() });
    if (!response.ok) throw await httpError(response);
    const listing = await response.json();
    state.voices = listing.voices || [];
    select.replaceChildren();
    const remembered = localStorage.getItem(VOICE_STORAGE);
    for (const voice of state.voices) {
      const option = document.createElement("option");
      option.value = voice.id;
      const lang = voice.language ? ` · ${voice.language}` : "";
      option.textContent = `${voice.id}${lang}`;
      if (voice.description) option.title = voice.description;
      select.append(option);
    }
    const ids = state.voices.map((v) => v.id);
    select.value = ids.includes(remembered) ? remembered : listing.default || ids[0] || "";
    select.disabled = state.voices.length === 0;
    const speed = (listing.parameters || []).find((p) => p.name === "speed" && p.effective !== false);
    if (speed) setupSpeed(speed);
    const engine = listing.engine ? `${listing.engine} engine` : "connected";
    setServer("ok", `${engine} · ${state.voices.length} voice${state.voices.length === 1 ? "" : "s"}`);
  } catch (err) {
    select.replaceChildren(new Option("server default", ""));
    select.disabled = false;
    setServer("down", "voices unavailable");
    showError(err.title || "Could not load voices", err.message);
  }
}

function setupSpeed(spec) {
  const input = $("speed");
  if (typeof spec.minimum === "number") input.min = String(Math.max(spec.minimum, 0.25));
  if (typeof spec.maximum === "number") input.max = String(Math.min(spec.maximum, 4));
  input.value = String(spec.default ?? 1);
  $("speed-field").hidden = false;
  showSpeed();
}

function showSpeed() {
  $("speed-value").textContent = `${Number($("speed").value).toFixed(2)}×`;
}

// ---------------------------------------------------------------- speaking

async function speak() {
  if (state.running) return;
  const text = $("text").value;
  if (!text.trim()) {
    showError("Nothing to say", "Type some text first.");
    return;
  }
  reset();
  state.running = true;
  setButtons();
  setStatus("waiting for audio…");

  if (!audioCtx) {
    try {
      audioCtx = new AudioContext({ sampleRate: SAMPLE_RATE_HZ, latencyHint: "interactive" });
    } catch (_) {
      audioCtx = new AudioContext(); // buffers stay at 24 kHz; the context resamples
    }
  }
  if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});

  const body = { text };
  const voice = $("voice").value;
  if (voice) body.voice = voice;
  if (!$("speed-field").hidden && Number($("speed").value) !== 1) body.speed = Number($("speed").value);

  controller = new AbortController();
  sentAt = performance.now();
  let ended = false;
  try {
    const response = await fetch("v1/tts/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    state.requestId = response.headers.get("X-Request-Id");
    if (!response.ok) throw await httpError(response);
    setStatus("streaming");
    ended = await readFrames(response.body.getReader());
    if (!ended) {
      throw protocolError("The stream ended without its final frame", "the connection broke before eos; the audio is incomplete");
    }
  } catch (err) {
    if (err.name === "AbortError") {
      setStatus("stopped");
    } else {
      controller.abort(); // close the connection: nothing more is read from a failed stream
      fail(err);
    }
  } finally {
    finish();
  }
}

// Reads NDJSON lines as they arrive; returns true once an eos or error frame was seen.
async function readFrames(reader) {
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line && onFrame(parseFrame(line))) {
        reader.cancel().catch(() => {});
        return true;
      }
    }
  }
  buffered += decoder.decode();
  return buffered.trim() ? onFrame(parseFrame(buffered.trim())) : false;
}

function parseFrame(line) {
  try {
    return JSON.parse(line);
  } catch (_) {
    throw protocolError("Malformed frame", `not JSON: ${line.slice(0, 120)}`);
  }
}

// Handles one frame; returns true for a terminal frame.
function onFrame(frame) {
  switch (frame.type) {
    case "chunk":
      onChunk(frame);
      return false;
    case "metrics":
      onMetrics(frame);
      return false;
    case "eos":
      if (frame.samples_total !== undefined && frame.samples_total !== state.samples) {
        throw protocolError("Audio is incomplete", `the server sent ${frame.samples_total} samples, ${state.samples} arrived`);
      }
      state.done = true;
      setStatus("done");
      return true;
    case "error": {
      const err = new Error(frame.message || "the stream failed");
      err.title = `Stream failed: ${frame.code || "error"}`;
      err.code = frame.code;
      err.retryable = frame.retryable;
      throw err;
    }
    default:
      return false; // unknown frame types are ignored (protocol v1)
  }
}

function onChunk(frame) {
  const bytes = base64ToBytes(frame.audio || "");
  if (bytes.length % 2 !== 0) throw protocolError("Malformed chunk", "odd number of PCM bytes");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = bytes.length / 2;
  const floats = new Float32Array(count);
  for (let i = 0; i < count; i++) floats[i] = view.getInt16(i * 2, true) / 32768;

  if (state.chunks === 0) {
    state.ttfaMs = performance.now() - sentAt;
    $("ttfa").textContent = `${Math.round(state.ttfaMs)} ms`;
  }
  state.chunks += 1;
  state.samples += count;
  pcmParts.push(bytes);
  addPeaks(floats);
  enqueue(floats);
  updateLive();
  queueDraw();
}

// Workers send one metrics frame before the audio (queue, load) and one before eos (timings).
function onMetrics(frame) {
  const info = (state.serverInfo = { ...state.serverInfo, ...frame });
  if (typeof info.rtf === "number") state.serverRtf = info.rtf;
  if (typeof info.ttfb_ms === "number") state.serverTtfbMs = info.ttfb_ms;
  const parts = [];
  if (info.engine) parts.push(`engine ${info.engine}`);
  if (info.worker) parts.push(`worker ${info.worker}`);
  if (typeof info.queue_ms === "number") parts.push(`queued ${Math.round(info.queue_ms)} ms`);
  if (state.serverTtfbMs !== null) parts.push(`server first audio ${Math.round(state.serverTtfbMs)} ms`);
  if (state.serverRtf !== null) parts.push(`server RTF ${state.serverRtf.toFixed(3)}`);
  state.lastMetrics = parts.join(" · ");
  showDetails();
}

// ---------------------------------------------------------------- playback

function enqueue(floats) {
  if (playStart === null) {
    pending.push(floats);
    pendingSamples += floats.length;
    if (pendingSamples >= (JITTER_BUFFER_MS / 1000) * SAMPLE_RATE_HZ) startPlayback();
    return;
  }
  schedule(floats);
}

function startPlayback() {
  if (playStart !== null || !audioCtx) return;
  playStart = audioCtx.currentTime + SCHEDULE_LEAD_S;
  nextTime = playStart;
  for (const floats of pending) schedule(floats);
  pending = [];
  pendingSamples = 0;
  requestAnimationFrame(drawLoop);
}

function schedule(floats) {
  const now = audioCtx.currentTime;
  if (nextTime < now) {
    // The network fell behind playback: resume a little ahead, and count the gap.
    state.underruns += 1;
    playStart += now + SCHEDULE_LEAD_S - nextTime;
    nextTime = now + SCHEDULE_LEAD_S;
  }
  const buffer = audioCtx.createBuffer(1, floats.length, SAMPLE_RATE_HZ);
  buffer.copyToChannel(floats, 0);
  const source = audioCtx.createBufferSource();
  source.buffer = buffer;
  source.connect(audioCtx.destination);
  source.start(nextTime);
  source.onended = () => {
    sources = sources.filter((s) => s !== source);
  };
  sources.push(source);
  nextTime += floats.length / SAMPLE_RATE_HZ;
  scheduledSamples += floats.length;
}

function stopPlayback() {
  for (const source of sources) {
    try {
      source.stop();
    } catch (_) {
      // already stopped
    }
  }
  sources = [];
}

// ---------------------------------------------------------------- waveform

function addPeaks(floats) {
  let data = floats;
  if (peakCarry) {
    data = new Float32Array(peakCarry.length + floats.length);
    data.set(peakCarry);
    data.set(floats, peakCarry.length);
  }
  let i = 0;
  for (; i + PEAK_BLOCK_SAMPLES <= data.length; i += PEAK_BLOCK_SAMPLES) {
    let lo = 1;
    let hi = -1;
    for (let j = i; j < i + PEAK_BLOCK_SAMPLES; j++) {
      const v = data[j];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    peaks.push([lo, hi]);
  }
  peakCarry = i < data.length ? data.slice(i) : null;
}

function queueDraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    draw();
  });
}

function drawLoop() {
  draw();
  if (sources.length || state.running) requestAnimationFrame(drawLoop);
}

function draw() {
  const canvas = $("wave");
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const g = canvas.getContext("2d");
  const style = getComputedStyle(document.documentElement);
  g.clearRect(0, 0, width, height);

  const seconds = Math.max(MIN_WAVE_WINDOW_S, state.samples / SAMPLE_RATE_HZ);
  const mid = height / 2;
  g.fillStyle = style.getPropertyValue("--grid").trim() || "#ddd";
  g.fillRect(0, Math.round(mid), width, Math.max(1, ratio));
  g.font = `${11 * ratio}px system-ui, sans-serif`;
  const step = seconds > 30 ? 10 : seconds > 12 ? 2 : 1;
  const labelColor = style.getPropertyValue("--muted").trim() || "#777";
  for (let s = step; s < seconds; s += step) {
    const x = Math.round((s / seconds) * width);
    g.fillRect(x, height - 6 * ratio, Math.max(1, ratio), 6 * ratio);
  }
  g.fillStyle = labelColor;
  for (let s = step; s < seconds; s += step) {
    g.fillText(`${s}s`, Math.round((s / seconds) * width) + 3 * ratio, height - 3 * ratio);
  }

  if (peaks.length) {
    const blocksPerPx = (seconds * SAMPLE_RATE_HZ) / PEAK_BLOCK_SAMPLES / width;
    const amp = mid * 0.92;
    g.fillStyle = style.getPropertyValue("--wave").trim() || "#4f46e5";
    for (let x = 0; x < width; x++) {
      const from = Math.floor(x * blocksPerPx);
      if (from >= peaks.length) break;
      const to = Math.min(peaks.length, Math.max(from + 1, Math.floor((x + 1) * blocksPerPx)));
      let lo = 1;
      let hi = -1;
      for (let b = from; b < to; b++) {
        if (peaks[b][0] < lo) lo = peaks[b][0];
        if (peaks[b][1] > hi) hi = peaks[b][1];
      }
      const top = mid - hi * amp;
      g.fillRect(x, top, 1, Math.max(ratio, mid - lo * amp - top));
    }
  }

  if (playStart !== null && audioCtx) {
    const played = Math.min(audioCtx.currentTime - playStart, scheduledSamples / SAMPLE_RATE_HZ);
    if (played > 0 && (sources.length || state.running)) {
      g.fillStyle = style.getPropertyValue("--accent").trim() || "#e11d48";
      g.fillRect(Math.round((played / seconds) * width), 0, Math.max(2, 2 * ratio), height);
    }
  }
}

// ---------------------------------------------------------------- WAV download

function wavBlob() {
  const dataBytes = state.samples * 2;
  const header = new DataView(new ArrayBuffer(44));
  const ascii = (offset, text) => {
    for (let i = 0; i < text.length; i++) header.setUint8(offset + i, text.charCodeAt(i));
  };
  ascii(0, "RIFF");
  header.setUint32(4, 36 + dataBytes, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  header.setUint32(16, 16, true); // fmt chunk size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, SAMPLE_RATE_HZ, true);
  header.setUint32(28, SAMPLE_RATE_HZ * 2, true); // byte rate
  header.setUint16(32, 2, true); // block align
  header.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  header.setUint32(40, dataBytes, true);
  return new Blob([header, ...pcmParts], { type: "audio/wav" });
}

function download() {
  if (!state.samples) return;
  const url = URL.createObjectURL(wavBlob());
  const link = document.createElement("a");
  link.href = url;
  const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
  link.download = `orpheus-${stamp}.wav`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---------------------------------------------------------------- errors

async function httpError(response) {
  let code = "";
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || "";
      message = body.error.message || message;
    }
  } catch (_) {
    // not a JSON error body
  }
  const err = new Error(message);
  err.title = `HTTP ${response.status}${code ? ` ${code}` : ""}`;
  err.code = code;
  const retryAfter = response.headers.get("Retry-After");
  if (retryAfter) err.message += ` (retry after ${retryAfter} s)`;
  if (response.status === 401) err.message += " Enter a valid API key above.";
  return err;
}

function protocolError(title, message) {
  const err = new Error(message);
  err.title = title;
  return err;
}

function fail(err) {
  const title = err.title || (err instanceof TypeError ? "Network error" : "Error");
  state.error = { title, code: err.code || null, message: err.message };
  let message = err.message;
  if (state.samples) message += ` (after ${(state.samples / SAMPLE_RATE_HZ).toFixed(2)} s of audio)`;
  showError(title, message);
  setStatus("failed");
}

function showError(title, message) {
  $("error-title").textContent = title;
  $("error-message").textContent = message;
  $("error").hidden = false;
}

// ---------------------------------------------------------------- page state

function reset() {
  stopPlayback();
  Object.assign(state, {
    samples: 0,
    chunks: 0,
    ttfaMs: null,
    rtf: null,
    serverRtf: null,
    serverTtfbMs: null,
    done: false,
    error: null,
    requestId: null,
    underruns: 0,
    lastMetrics: null,
    serverInfo: {},
  });
  pcmParts = [];
  peaks = [];
  peakCarry = null;
  pending = [];
  pendingSamples = 0;
  playStart = null;
  scheduledSamples = 0;
  $("error").hidden = true;
  for (const id of ["ttfa", "rtf", "audio-s", "chunks", "samples"]) $(id).textContent = "–";
  showDetails();
  draw();
}

function finish() {
  if (pending.length) startPlayback(); // short audio: play what came, even under the jitter buffer
  state.running = false;
  controller = null;
  updateLive();
  showDetails();
  setButtons();
  queueDraw();
}

function updateLive() {
  const audioS = state.samples / SAMPLE_RATE_HZ;
  $("audio-s").textContent = audioS ? `${audioS.toFixed(2)} s` : "–";
  $("chunks").textContent = state.chunks ? String(state.chunks) : "–";
  $("samples").textContent = state.samples ? state.samples.toLocaleString("en-US") : "–";
  if (audioS > 0) {
    // Wall time since the request was sent, per second of audio received: below 1 is faster than real time.
    state.rtf = (performance.now() - sentAt) / 1000 / audioS;
    $("rtf").textContent = `${state.rtf.toFixed(3)}×`;
  }
}

function showDetails() {
  const parts = [];
  if (state.requestId) parts.push(`request ${state.requestId}`);
  if (state.lastMetrics) parts.push(state.lastMetrics);
  if (state.underruns) parts.push(`${state.underruns} playback gap${state.underruns === 1 ? "" : "s"}`);
  $("details").textContent = parts.join(" · ");
}

function setStatus(text) {
  $("status").textContent = text;
  $("status").dataset.state = text.split(" ")[0].replace(/…$/, "");
}

function setServer(kind, text) {
  $("server-status").dataset.state = kind;
  $("server-text").textContent = text;
}

function setButtons() {
  $("speak").disabled = state.running;
  $("stop").disabled = !state.running;
  $("download").disabled = state.running || state.samples === 0;
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function updateCharCount() {
  $("char-count").textContent = $("text").value.length.toLocaleString("en-US");
}

function init() {
  const keyInput = $("api-key");
  keyInput.value = localStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("change", () => {
    const key = keyInput.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  });
  $("voice").addEventListener("change", () => localStorage.setItem(VOICE_STORAGE, $("voice").value));
  $("speed").addEventListener("input", showSpeed);
  $("text").addEventListener("input", updateCharCount);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      speak();
    }
  });
  $("speak").addEventListener("click", speak);
  $("stop").addEventListener("click", () => {
    if (controller) controller.abort();
    stopPlayback();
  });
  $("download").addEventListener("click", download);
  window.addEventListener("resize", queueDraw);
  updateCharCount();
  setButtons();
  draw();
  loadVoices();
}

init();
