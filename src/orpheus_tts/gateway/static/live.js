// Orpheus TTS playground, live mode: speaks while you type, over the realtime
// WebSocket (v1/tts/realtime), highlights each word as it is heard, and Stop
// sends "cancel". Plain JavaScript, no dependencies; same origin only.
"use strict";

const LIVE_RATE_HZ = 24000;
const LIVE_START_LEAD_S = 0.15; // audio held back before live playback starts
const FEED_WORD_MS = 90; // pace of "feed word by word": a fast typist, or an LLM

// What the live mode knows; also read by the browser test.
const live = {
  state: "idle", // idle | connecting | speaking | done | cancelled | error
  contextId: null,
  audioMessages: 0,
  samples: 0,
  audioAfterCancel: 0,
  words: [],
  highlighted: 0,
  error: null,
  firstAudioBeforeEnd: null,
};
window.__orpheusLive = live;

let liveSocket = null;
let liveCtx = null;
let liveSent = 0; // characters of #live-text already sent
let liveCounter = 0;
let liveEnded = false;
let livePlayStart = null; // AudioContext time of the context's first sample
let liveNext = 0;
let liveSources = [];
let liveFeedTimer = null;
let liveReady = null; // promise of an open, ready socket

const byId = (id) => document.getElementById(id);

function liveUrl() {
  const url = new URL("v1/tts/realtime", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function liveConnect() {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(liveUrl());
    let ready = false;
    socket.onopen = () => {
      // Browsers cannot set headers: the key goes in the first message (an open server ignores it).
      socket.send(JSON.stringify({ type: "auth", api_key: byId("api-key").value.trim() }));
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "ready") {
        ready = true;
        resolve(socket);
      } else {
        onLiveMessage(message);
      }
    };
    socket.onclose = (event) => {
      if (liveSocket === socket) liveSocket = null;
      liveReady = null;
      if (!ready) reject(new Error(`the server closed the connection (code ${event.code})`));
      else if (live.state === "speaking") liveFail("Connection lost", `the socket closed (code ${event.code})`);
    };
  });
}

let liveOpening = null; // promise of the context being opened

function liveEnsureContext() {
  if (live.state === "speaking") return Promise.resolve(true);
  if (!liveOpening) liveOpening = liveOpenContext().finally(() => (liveOpening = null));
  return liveOpening;
}

async function liveOpenContext() {
  liveReset();
  live.state = "connecting";
  setLiveStatus("connecting…");
  if (!liveCtx) {
    try {
      liveCtx = new AudioContext({ sampleRate: LIVE_RATE_HZ, latencyHint: "interactive" });
    } catch (_) {
      liveCtx = new AudioContext();
    }
  }
  if (liveCtx.state === "suspended") liveCtx.resume().catch(() => {});
  try {
    if (!liveSocket) {
      liveReady = liveReady || liveConnect();
      liveSocket = await liveReady;
    }
  } catch (err) {
    liveFail("Cannot connect", err.message);
    return false;
  }
  live.contextId = `live-${++liveCounter}`;
  const start = { type: "start", context_id: live.contextId, timestamps: true, params: {} };
  const voice = byId("voice").value;
  if (voice) start.voice = voice;
  liveSocket.send(JSON.stringify(start));
  live.state = "speaking";
  setLiveStatus("speaking while you type");
  setLiveButtons();
  return true;
}

async function liveSendNew() {
  const text = byId("live-text").value;
  if (text.length <= liveSent) {
    liveSent = Math.min(liveSent, text.length); // deleted text has been said already
    return;
  }
  if (!(await liveEnsureContext())) return;
  const piece = text.slice(liveSent);
  liveSent = text.length;
  liveSocket.send(JSON.stringify({ type: "text", context_id: live.contextId, text: piece }));
}

function liveEnd() {
  if (live.state !== "speaking" || !liveSocket) return;
  liveSendNew();
  liveEnded = true;
  liveSocket.send(JSON.stringify({ type: "end", context_id: live.contextId }));
  setLiveStatus("finishing…");
}

function liveStop() {
  clearInterval(liveFeedTimer);
  liveFeedTimer = null;
  if (live.state === "speaking" && liveSocket) {
    liveSocket.send(JSON.stringify({ type: "cancel", context_id: live.contextId }));
  }
  for (const source of liveSources) {
    try {
      source.stop();
    } catch (_) {}
  }
  liveSources = [];
}

function liveFeed() {
  // Feeds the text of the main box into the live box word by word, as an LLM would write it.
  const words = byId("text").value.match(/\S+\s*/g) || [];
  byId("live-text").value = "";
  liveSent = 0;
  clearInterval(liveFeedTimer);
  let i = 0;
  liveFeedTimer = setInterval(() => {
    if (i >= words.length) {
      clearInterval(liveFeedTimer);
      liveFeedTimer = null;
      liveSendNew().then(liveEnd);
      return;
    }
    byId("live-text").value += words[i++];
    liveSendNew();
  }, FEED_WORD_MS);
}

function onLiveMessage(message) {
  if (message.context_id && message.context_id !== live.contextId) return;
  if (message.type === "audio") {
    if (live.state === "cancelled") {
      live.audioAfterCancel += 1;
      return;
    }
    if (live.firstAudioBeforeEnd === null) live.firstAudioBeforeEnd = !liveEnded;
    live.audioMessages += 1;
    live.samples += message.samples;
    livePlay(message.audio);
  } else if (message.type === "words") {
    for (const w of message.words) addLiveWord(w);
  } else if (message.type === "done") {
    live.state = "done";
    setLiveStatus(`done: ${(live.samples / LIVE_RATE_HZ).toFixed(2)} s of audio`);
    setLiveButtons();
  } else if (message.type === "cancelled") {
    live.state = "cancelled";
    setLiveStatus("stopped");
    setLiveButtons();
  } else if (message.type === "error") {
    liveFail(message.code, message.message);
  }
}

function livePlay(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const ints = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const floats = new Float32Array(ints.length);
  for (let i = 0; i < ints.length; i++) floats[i] = ints[i] / 32768;
  if (livePlayStart === null) {
    livePlayStart = liveCtx.currentTime + LIVE_START_LEAD_S;
    liveNext = livePlayStart;
    requestAnimationFrame(liveHighlight);
  }
  const buffer = liveCtx.createBuffer(1, floats.length, LIVE_RATE_HZ);
  buffer.copyToChannel(floats, 0);
  const source = liveCtx.createBufferSource();
  source.buffer = buffer;
  source.connect(liveCtx.destination);
  liveNext = Math.max(liveNext, liveCtx.currentTime);
  source.start(liveNext);
  liveNext += buffer.duration;
  liveSources.push(source);
  source.onended = () => {
    liveSources = liveSources.filter((s) => s !== source);
  };
}

function addLiveWord(w) {
  const span = document.createElement("span");
  span.className = "live-word";
  span.textContent = w.word;
  span.dataset.start = String(w.start_s);
  span.dataset.end = String(w.end_s);
  const box = byId("live-words");
  if (box.childNodes.length) box.appendChild(document.createTextNode(" "));
  box.appendChild(span);
  live.words.push(w.word);
}

function liveHighlight() {
  if (livePlayStart === null || !liveCtx) return;
  const t = liveCtx.currentTime - livePlayStart;
  let spoken = 0;
  for (const span of byId("live-words").querySelectorAll(".live-word")) {
    const start = Number(span.dataset.start);
    const end = Number(span.dataset.end);
    const heard = live.state !== "cancelled" && start <= t;
    span.classList.toggle("spoken", heard);
    span.classList.toggle("current", heard && t < end);
    if (heard) spoken += 1;
  }
  live.highlighted = Math.max(live.highlighted, spoken);
  if (live.state === "speaking" || live.state === "done") requestAnimationFrame(liveHighlight);
}

function liveFail(title, message) {
  live.state = "error";
  live.error = { title, message };
  setLiveStatus(`${title}: ${message}`);
  setLiveButtons();
}

function liveReset() {
  Object.assign(live, { audioMessages: 0, samples: 0, audioAfterCancel: 0, words: [], highlighted: 0 });
  Object.assign(live, { error: null, firstAudioBeforeEnd: null });
  liveEnded = false;
  livePlayStart = null;
  liveNext = 0;
  byId("live-words").textContent = "";
}

function setLiveStatus(text) {
  byId("live-status").textContent = text;
}

function setLiveButtons() {
  const speaking = live.state === "speaking" || live.state === "connecting";
  byId("live-end").disabled = !speaking;
  byId("live-stop").disabled = !speaking;
}

function initLive() {
  byId("live-text").addEventListener("input", () => {
    if (live.state !== "speaking" && live.state !== "connecting") liveSent = 0;
    liveSendNew();
  });
  byId("live-end").addEventListener("click", liveEnd);
  byId("live-stop").addEventListener("click", liveStop);
  byId("live-feed").addEventListener("click", liveFeed);
  setLiveButtons();
}

document.addEventListener("DOMContentLoaded", initLive);
