// The antiphon playground: microphone → /ws/agent (PCM16 16 kHz, 20 ms) → agent audio back.
// Protocol: docs/transport-ws.md. `window.antiphon` exposes counters for tests.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { framesSent: 0, framesReceived: 0, framesPlayed: 0, clears: 0, events: [] };
window.antiphon = state;

let ws = null;
let ctx = null;
let mic = null;
let playback = null;
let outputRate = 16000;
let agentItem = null;

function show(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

function addLine(role, text) {
  const li = document.createElement("li");
  li.className = role;
  li.textContent = `${role === "user" ? "You" : "Agent"}: ${text}`;
  $("log").append(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

function ms(v) {
  return v == null ? "–" : Math.round(v * 1000);
}

function onEvent(ev) {
  state.events.push(ev);
  switch (ev.type) {
    case "ready":
      outputRate = ev.output_rate;
      break;
    case "state":
      $("state").textContent = ev.state.replace("_", " ");
      $("state").className = `state ${ev.state}`;
      break;
    case "transcript":
      if (ev.role === "user") {
        if (ev.final) {
          $("interim").textContent = "";
          addLine("user", ev.text);
        } else {
          $("interim").textContent = ev.text;
        }
      } else if (agentItem && agentItem.dataset.generation === String(ev.generation)) {
        agentItem.textContent += ` ${ev.text}`; // the next sentence of the same reply
      } else {
        agentItem = addLine("agent", ev.text);
        agentItem.dataset.generation = String(ev.generation);
      }
      break;
    case "words":
      // the reply's words as they play: what the caller has heard so far, under the line
      if (agentItem && agentItem.dataset.generation === String(ev.generation)) {
        const heard = `${agentItem.dataset.heard || ""} ${ev.words.join(" ")}`;
        agentItem.dataset.heard = heard.trim();
      }
      break;
    case "clear":
      state.clears++;
      playback?.port.postMessage({ type: "clear" });
      break;
    case "interrupted":
      if (agentItem) agentItem.classList.add("cut");
      if (ev.text) addLine("agent", `${ev.text} …`);
      break;
    case "turn": {
      const m = ev.metrics;
      const row = document.createElement("tr");
      for (const v of [m.generation, ms(m.voice_to_voice), ms(m.end_of_turn_delay),
        ms(m.llm_ttft), ms(m.tts_ttfa)]) {
        const td = document.createElement("td");
        td.textContent = v;
        row.append(td);
      }
      $("turns").tBodies[0].append(row);
      break;
    }
    case "error":
      show(`${ev.stage}: ${ev.message}`);
      break;
  }
}

let pc = null;

async function startWebRTC(raw) {
  // Opus both ways through the browser's own stack; events on the "events" data channel.
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: !raw, noiseSuppression: !raw, autoGainControl: !raw },
  });
  const token = params.get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  // the server's STUN/TURN servers (antiphon serve --ice-server), for callers behind NAT
  const config = await fetch(`/webrtc/config${query}`);
  if (!config.ok) throw new Error((await config.json()).error || config.statusText);
  pc = new RTCPeerConnection(await config.json());
  const channel = pc.createDataChannel("events");
  channel.onmessage = (e) => onEvent(JSON.parse(e.data));
  stream.getTracks().forEach((t) => pc.addTrack(t, stream));
  const audio = new Audio();
  audio.autoplay = true;
  pc.ontrack = (e) => { audio.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    setTimeout(resolve, 3000); // send what was gathered by then
  });
  const response = await fetch(`/webrtc/offer${query}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  if (!response.ok) throw new Error((await response.json()).error || response.statusText);
  await pc.setRemoteDescription(await response.json());
  state.transport = "webrtc";
  setInterval(async () => {
    if (!pc) return;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio") state.framesReceived = r.packetsReceived;
      if (r.type === "outbound-rtp" && r.kind === "audio") state.framesSent = r.packetsSent;
    });
  }, 250);
  mic = { stream, disconnect: () => {} };
  $("talk").textContent = "Stop";
  $("talk").setAttribute("aria-pressed", "true");
}

async function start() {
  show("");
  if (params.get("transport") === "webrtc") return startWebRTC(params.has("raw"));
  const raw = params.has("raw"); // no browser processing (tests, or a headset)
  ctx = new AudioContext();
  await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: {
      channelCount: 1,
      echoCancellation: !raw,
      noiseSuppression: !raw,
      autoGainControl: !raw,
    },
  });
  const source = ctx.createMediaStreamSource(stream);
  mic = new AudioWorkletNode(ctx, "capture", { processorOptions: { targetRate: 16000 } });
  const mute = ctx.createGain();
  mute.gain.value = 0;
  source.connect(mic).connect(mute).connect(ctx.destination);
  playback = new AudioWorkletNode(ctx, "playback", { outputChannelCount: [1] });
  playback.connect(ctx.destination);
  playback.port.onmessage = (e) => { state.framesPlayed = e.data.played; };

  const token = params.get("token");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/ws/agent${token ? `?token=${encodeURIComponent(token)}` : ""}`;
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => {
    if (typeof e.data === "string") {
      onEvent(JSON.parse(e.data));
    } else {
      state.framesReceived++;
      playback.port.postMessage({ type: "pcm", pcm: e.data, rate: outputRate }, [e.data]);
    }
  };
  ws.onclose = (e) => {
    if (e.code !== 1000) show(`the call ended (${e.code}${e.reason ? `: ${e.reason}` : ""})`);
    stop(false);
  };
  mic.port.onmessage = (e) => {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(e.data);
      state.framesSent++;
    }
  };
  stream.getTracks()[0].onended = () => stop(true);
  mic.stream = stream;
  $("talk").textContent = "Stop";
  $("talk").setAttribute("aria-pressed", "true");
  $("greet").disabled = false;
}

function stop(sendEnd) {
  if (pc) {
    pc.close();
    pc = null;
  }
  if (ws && ws.readyState === WebSocket.OPEN && sendEnd) ws.send(JSON.stringify({ type: "end" }));
  mic?.stream?.getTracks().forEach((t) => t.stop());
  mic?.disconnect();
  mic = null;
  ws = null;
  $("talk").textContent = "Talk";
  $("talk").setAttribute("aria-pressed", "false");
  $("greet").disabled = true;
  $("state").textContent = "idle";
  $("state").className = "state";
}

$("talk").addEventListener("click", () => {
  if (ws || pc) {
    stop(true);
  } else {
    start().catch((err) => { show(`cannot start: ${err.message}`); stop(false); });
  }
});
$("greet").addEventListener("click", () => {
  ws?.send(JSON.stringify({ type: "say", text: "Hello! What can I do for you?" }));
});
