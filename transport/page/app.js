// VoiceRelay browser client: one WebRTC session (microphone up, assistant audio down, `events`
// data channel both ways, and the camera up when the `camera` box is ticked or the URL says
// `?camera=1`), signalled with a WHIP-style POST /v1/sessions. The session's URL and resume token
// are kept in sessionStorage: after a reload, Connect resumes the same conversation
// (POST {session}/resume), and a connection that fails is resumed automatically.
'use strict';
const $ = (id) => document.getElementById(id);
// Read by the end-to-end browser test; also handy from the console.
// `connectedAt`/`listeningAt`/`micAt`: performance.now() when Connect was pressed, when the
// server's conversation said it listens (its first `voice` event), when the microphone opened.
// `scenes`: the server's `scene` events (what it labelled on the camera), with their arrival time.
// `video`: one sample a second of the camera's outbound-rtp stats while it sends (see
// vrOutboundVideo), the newest last. `videoRates`: the server's `video_rate` requests, applied.
window.vr = { state: 'disconnected', finals: [], partial: '', assistant: [], latencies: [], drafts: [], events: [], errors: [],
  voice: null, connectedAt: null, listeningAt: null, micAt: null, cameraAt: null, scenes: [], video: [], videoRates: [],
  session: null, resumed: false };

let pc = null, dc = null, mic = null, sender = null, location_ = null, meterCtx = null, turn = 0, current = null;
// The camera's stream while it is shared, and the timer sampling its send statistics.
let camera = null, videoTimer = null;
// Dual path: the verifier's decision on this turn's draft (it comes before the turn's latency
// row), and the row whose seam cell a later `seam` event fills.
let draft = null, seamCell = null;

function cell(row, text) { const td = document.createElement('td'); td.textContent = text; row.appendChild(td); return td; }

function setStatus(s) { window.vr.state = s; $('status').textContent = s; }
function showError(msg) { window.vr.errors.push(msg); $('error').textContent = msg; }
function para(parent, text) { const p = document.createElement('p'); p.textContent = text; parent.appendChild(p); return p; }
// The session to resume (its URL and token), for this tab only: a reload keeps it, a new tab
// starts its own conversation.
const SAVED = 'voicerelay.session';
function savedSession() { try { return JSON.parse(sessionStorage.getItem(SAVED) || 'null'); } catch (_) { return null; } }
function saveSession(loc, token) { try { if (loc && token) sessionStorage.setItem(SAVED, JSON.stringify({ loc, token })); } catch (_) {} }
function forgetSession() { try { sessionStorage.removeItem(SAVED); } catch (_) {} }
// Automatic resumes left after a failed connection (reset once connected).
let resumesLeft = 3;

function authHeaders() {
  const t = $('token').value.trim();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

function onEvent(ev) {
  window.vr.events.push(ev);
  switch (ev.type) {
    case 'partial':
      window.vr.partial = ev.text; $('partial').textContent = ev.text; break;
    case 'final':
      window.vr.finals.push(ev.text); window.vr.partial = '';
      $('partial').textContent = ''; para($('transcript'), ev.text); current = null; break;
    case 'assistant_text':
      window.vr.assistant.push(ev.text);
      if (!current) current = para($('assistant'), '');
      current.textContent += (current.textContent ? ' ' : '') + ev.text; break;
    case 'barge_in':
      if (current) current.textContent += ' [interrupted]';
      current = null; break;
    case 'state':
      setStatus('connected · ' + String(ev.to).toLowerCase()); break;
    case 'draft':
      window.vr.drafts.push(ev); draft = ev; break;
    case 'seam':
      if (seamCell) seamCell.textContent = Math.round(ev.gap_ms);
      seamCell = null; break;
    case 'turn_latency': {
      turn += 1; window.vr.latencies.push(ev);
      const row = document.createElement('tr');
      const cells = [turn, ev.endpointing_ms, ev.asr_final_ms, ev.llm_first_token_ms, ev.first_clause_ms, ev.tts_first_chunk_ms, ev.onset_ms];
      for (const c of cells) cell(row, c == null ? '–' : Math.round(c));
      // Which model's words were heard first, and why: a kept draft is the fast model's.
      cell(row, draft ? (draft.kept ? 'fast' : 'slow') : 'one model');
      const score = draft && draft.score != null ? draft.score.toFixed(2) + ' ' : '';
      const verdict = cell(row, draft ? score + (draft.kept ? 'kept' : 'dropped') : '–');
      if (draft) verdict.title = draft.text;
      seamCell = cell(row, '–');
      if (!draft || !draft.kept) seamCell = null;
      draft = null;
      $('latency').tBodies[0].appendChild(row); break;
    }
    case 'scene':
      window.vr.scenes.push({ description: ev.description, at: performance.now() });
      $('scene').textContent = ev.description; break;
    case 'video_rate':
      // The server asks for fewer frames while the picture stands still (and all of them once it
      // moves): cap the camera sender's encoder, which spends the bits on quality instead.
      window.vr.videoRates.push({ max_fps: ev.max_fps, motion: ev.motion, at: performance.now() });
      capFrameRate(ev.max_fps); break;
    case 'voice':
      window.vr.voice = ev.voice; $('voice').value = ev.voice; $('voice').disabled = false;
      // The first one means the conversation is reading our audio: only now is the microphone
      // opened, so nothing said before the server listens is lost.
      if (window.vr.listeningAt == null) { window.vr.listeningAt = performance.now(); openMic(); }
      break;
    case 'resumed':
      // The same conversation on a new connection: it listens already, so no `voice` event comes
      // first this time.
      window.vr.resumed = true; setStatus('connected · resumed'); $('voice').disabled = false;
      if (!mic) { window.vr.listeningAt = performance.now(); openMic(); }
      break;
    case 'error':
      showError(ev.message); break;
  }
}

async function openMic() {
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true }, video: false });
    if (!pc || !sender) { mic.getTracks().forEach((t) => t.stop()); mic = null; return; }
    await sender.replaceTrack(mic.getAudioTracks()[0]);
    window.vr.micAt = performance.now();
    startMeter(mic);
  } catch (err) {
    showError('microphone: ' + (err.message || err));
  }
}

function startMeter(stream) {
  // Created in the Connect click (a user gesture): one made later, when the server says it
  // listens, would start suspended and the meter would never move.
  if (!meterCtx) meterCtx = new AudioContext();
  meterCtx.resume().catch(() => {});
  const an = meterCtx.createAnalyser(); an.fftSize = 1024;
  meterCtx.createMediaStreamSource(stream).connect(an);
  const buf = new Float32Array(an.fftSize);
  const tick = () => {
    if (!meterCtx) return;
    an.getFloatTimeDomainData(buf);
    let s = 0; for (const v of buf) s += v * v;
    const rms = Math.sqrt(s / buf.length);
    window.vr.micRms = rms; window.vr.micPeak = Math.max(window.vr.micPeak || 0, rms);
    $('level').style.width = Math.min(100, rms * 400) + '%';
    requestAnimationFrame(tick);
  };
  tick();
}

function waitForIce(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const t = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}

// Caps the camera sender's frame rate (RTCRtpSender encodings' maxFramerate); the track itself
// keeps capturing, so raising the cap again takes effect at once.
async function capFrameRate(fps) {
  const sender = pc && pc.getSenders().find((s) => s.track && s.track.kind === 'video');
  if (!sender || !Number.isFinite(fps) || fps <= 0) return;
  const params = sender.getParameters();
  if (!params.encodings || params.encodings.length === 0) return;
  for (const e of params.encodings) e.maxFramerate = fps;
  try { await sender.setParameters(params); } catch (e) { console.warn('maxFramerate', e); }
}

// The camera, opened before the offer so its track is negotiated with it (send only: the server
// answers video recvonly). The server decodes VP8 and H.264; VP8 is offered first because the ReCap
// table behind the bitrate cap was measured with VP8 (abr/tables/vp8-efficientnet-lite0.toml).
async function openCamera() {
  camera = await navigator.mediaDevices.getUserMedia({
    audio: false, video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } },
  });
  const track = camera.getVideoTracks()[0];
  const tr = pc.addTransceiver(track, { direction: 'sendonly', streams: [camera] });
  const caps = RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities('video');
  if (caps && tr.setCodecPreferences) {
    // `?codec=h264` puts H.264 first instead (to try the server's H.264 path from a browser).
    const first = new URLSearchParams(window.location.search).get('codec') === 'h264' ? 'video/h264' : 'video/vp8';
    const pick = (c) => c.mimeType.toLowerCase() === first;
    tr.setCodecPreferences(caps.codecs.filter(pick).concat(caps.codecs.filter((c) => !pick(c))));
  }
  $('vision').hidden = false; $('preview').srcObject = camera;
  window.vr.cameraAt = performance.now();
  let last = null;
  videoTimer = setInterval(async () => {
    const v = await window.vrOutboundVideo();
    if (!v) return;
    window.vr.video.push(v);
    if (window.vr.video.length > 900) window.vr.video.shift();
    if (last && v.timestamp > last.timestamp) {
      const kbps = (8 * (v.bytesSent - last.bytesSent)) / (v.timestamp - last.timestamp);
      const k = (x) => (x == null ? '–' : Math.round(x / 1000));
      $('sendrate').textContent = `sending ${Math.round(kbps)} kbit/s (encoder target ${k(v.targetBitrate)}, ` +
        `estimate ${k(v.availableOutgoingBitrate)}), ${v.frameWidth || '–'}×${v.frameHeight || '–'}` +
        (v.qualityLimitationReason && v.qualityLimitationReason !== 'none' ? `, limited by ${v.qualityLimitationReason}` : '');
    }
    last = v;
  }, 1000);
}

async function connect() {
  $('connect').disabled = true; $('error').textContent = '';
  if (!meterCtx) meterCtx = new AudioContext();
  try {
    setStatus('connecting');
    window.vr.connectedAt = performance.now(); window.vr.listeningAt = null; window.vr.micAt = null;
    window.vr.cameraAt = null; window.vr.scenes = []; window.vr.video = []; window.vr.videoRates = [];
    const cfg = await (await fetch('/v1/client-config', { headers: authHeaders() })).json();
    pc = new RTCPeerConnection({ iceServers: cfg.ice_servers });
    // The audio section is negotiated now; the microphone track joins it once the server's
    // conversation listens (see openMic).
    const audio = pc.addTransceiver('audio', { direction: 'sendrecv' });
    sender = audio.sender;
    // RED first (RFC 2198: each packet repeats the one before), so a lost packet comes back whole
    // from the next one; the server accepts it (transport.red) or the answer falls back to Opus.
    const audioCaps = RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities('audio');
    if (audioCaps && audio.setCodecPreferences) {
      const red = (c) => c.mimeType.toLowerCase() === 'audio/red';
      audio.setCodecPreferences(audioCaps.codecs.filter(red).concat(audioCaps.codecs.filter((c) => !red(c))));
    }
    if ($('camera').checked) await openCamera();
    dc = pc.createDataChannel('events');
    dc.onmessage = (e) => { try { onEvent(JSON.parse(e.data)); } catch (err) { showError('bad event: ' + err); } };
    pc.ontrack = (e) => { $('remote').srcObject = e.streams[0] || new MediaStream([e.track]); };
    pc.onconnectionstatechange = () => {
      const s = pc ? pc.connectionState : 'closed';
      if (s === 'connected') {
        setStatus('connected'); resumesLeft = 3; $('interrupt').disabled = false; $('text').disabled = false;
      } else if (s === 'failed' && savedSession() && resumesLeft > 0) {
        // The network changed or dropped: the server keeps the conversation for a while.
        resumesLeft -= 1; showError('connection failed; resuming'); reconnect();
      } else if (s === 'failed' || s === 'closed') { showError('connection ' + s); disconnect(); }
      else setStatus(s);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc, 2000);
    const offer = { 'Content-Type': 'application/sdp' };
    let resp = null;
    const saved = savedSession();
    window.vr.resumed = false;
    if (saved) {
      resp = await fetch(saved.loc + '/resume', {
        method: 'POST',
        headers: Object.assign({ 'VoiceRelay-Resume-Token': saved.token }, offer, authHeaders()),
        body: pc.localDescription.sdp,
      });
      // Gone (its window passed, or the server restarted): a new conversation instead.
      if (!resp.ok) { forgetSession(); resp = null; }
    }
    if (!resp) {
      resp = await fetch('/v1/sessions', {
        method: 'POST',
        headers: Object.assign(offer, authHeaders()),
        body: pc.localDescription.sdp,
      });
    }
    if (!resp.ok) {
      let why = resp.status + ' ' + resp.statusText;
      try { const j = await resp.json(); why = j.reason || why; } catch (_) {}
      throw new Error(why);
    }
    location_ = resp.headers.get('Location');
    window.vr.session = location_;
    saveSession(location_, resp.headers.get('VoiceRelay-Resume-Token'));
    await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
    $('disconnect').disabled = false;
  } catch (err) {
    showError(String(err.message || err));
    await disconnect();
  }
}

// Disconnect: the conversation ends on the server too.
async function disconnect() {
  const loc = location_; location_ = null;
  forgetSession();
  if (loc) { try { await fetch(loc, { method: 'DELETE', headers: authHeaders() }); } catch (_) {} }
  closeLocal();
}

// A failed connection: drop it here only, then offer a new one for the same session.
async function reconnect() {
  location_ = null;
  closeLocal();
  await connect();
}

function closeLocal() {
  if (pc) { pc.close(); pc = null; }
  sender = null;
  if (mic) { mic.getTracks().forEach((t) => t.stop()); mic = null; }
  if (videoTimer) { clearInterval(videoTimer); videoTimer = null; }
  if (camera) { camera.getTracks().forEach((t) => t.stop()); camera = null; $('preview').srcObject = null; }
  if (meterCtx) { meterCtx.close(); meterCtx = null; }
  dc = null;
  $('level').style.width = '0';
  $('connect').disabled = false; $('disconnect').disabled = true;
  $('interrupt').disabled = true; $('text').disabled = true; $('voice').disabled = true;
  setStatus('disconnected');
}

function send(msg) { if (dc && dc.readyState === 'open') dc.send(JSON.stringify(msg)); }

// Inbound assistant audio as the browser sees it (used by the end-to-end test).
window.vrInboundAudio = async () => {
  if (!pc) return null;
  const out = { packetsReceived: 0, bytesReceived: 0, totalAudioEnergy: 0, totalSamplesReceived: 0 };
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.packetsReceived += s.packetsReceived || 0; out.bytesReceived += s.bytesReceived || 0;
      out.totalAudioEnergy += s.totalAudioEnergy || 0; out.totalSamplesReceived += s.totalSamplesReceived || 0;
    }
  });
  return out;
};

// The camera's outbound video as the browser sees it: what the encoder produced and sent, the
// rate it aims at (`targetBitrate`, which the congestion controller lowers when the server's
// REMB says so) and the transport's send-side estimate (`availableOutgoingBitrate`, of the
// selected candidate pair). `timestamp` is the stats' clock in ms. Used by the camera test.
window.vrOutboundVideo = async () => {
  if (!pc || !camera) return null;
  const out = { timestamp: null, bytesSent: 0, packetsSent: 0, framesEncoded: 0, framesSent: 0, targetBitrate: null,
    frameWidth: null, frameHeight: null, framesPerSecond: null, qualityLimitationReason: null, encoderImplementation: null,
    codec: null, availableOutgoingBitrate: null };
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.timestamp = s.timestamp;
      out.bytesSent += s.bytesSent || 0; out.packetsSent += s.packetsSent || 0;
      out.framesEncoded += s.framesEncoded || 0; out.framesSent += s.framesSent || 0;
      if (s.targetBitrate != null) out.targetBitrate = (out.targetBitrate || 0) + s.targetBitrate;
      out.frameWidth = s.frameWidth ?? out.frameWidth; out.frameHeight = s.frameHeight ?? out.frameHeight;
      out.framesPerSecond = s.framesPerSecond ?? out.framesPerSecond;
      out.qualityLimitationReason = s.qualityLimitationReason ?? out.qualityLimitationReason;
      out.encoderImplementation = s.encoderImplementation ?? out.encoderImplementation;
      const c = s.codecId && stats.get(s.codecId);
      if (c) out.codec = c.mimeType;
    }
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && s.availableOutgoingBitrate != null) {
      out.availableOutgoingBitrate = s.availableOutgoingBitrate;
    }
  });
  return out.timestamp == null ? null : out;
};

if (new URLSearchParams(window.location.search).get('camera') === '1') $('camera').checked = true;
$('connect').onclick = connect;
$('disconnect').onclick = disconnect;
$('interrupt').onclick = () => send({ type: 'interrupt' });
$('voice').onchange = (e) => send({ type: 'config', voice: e.target.value });
$('text').onkeydown = (e) => {
  if (e.key === 'Enter' && e.target.value.trim()) {
    send({ type: 'text', text: e.target.value.trim() });
    para($('transcript'), '⌨ ' + e.target.value.trim());
    e.target.value = '';
  }
};
// Leaving the page does not end the session: a reload resumes it (sessionStorage), and a closed
// tab's session ends when the server's resume window (transport.resume_window_ms) passes.
