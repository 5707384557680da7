// AudioWorklet processors of the antiphon playground: microphone capture to 16 kHz PCM16
// in 20 ms messages, and playback of the agent's PCM16 frames with a small jitter buffer.

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.target = options.processorOptions.targetRate || 16000;
    this.step = sampleRate / this.target; // input samples per output sample
    this.pos = 0; // position of the next output sample, in input samples
    this.prev = 0; // the last input sample of the previous block
    this.frame = new Int16Array(this.target / 50); // 20 ms
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    // linear interpolation across block edges (prev is sample -1 of this block)
    while (this.pos < input.length) {
      const i = Math.floor(this.pos);
      const a = i === 0 ? this.prev : input[i - 1];
      const b = input[i];
      const t = this.pos - i;
      const v = Math.max(-1, Math.min(1, a + (b - a) * t));
      this.frame[this.fill++] = v < 0 ? v * 0x8000 : v * 0x7fff;
      if (this.fill === this.frame.length) {
        this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
        this.frame = new Int16Array(this.target / 50);
        this.fill = 0;
      }
      this.pos += this.step;
    }
    this.pos -= input.length;
    this.prev = input[input.length - 1];
    return true;
  }
}

class Playback extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // Float32Arrays at the context rate
    this.offset = 0;
    this.played = 0; // agent frames (20 ms) fully played
    this.samples = 0;
    this.port.onmessage = (e) => {
      const msg = e.data;
      if (msg.type === "clear") {
        this.queue = [];
        this.offset = 0;
        return;
      }
      this.queue.push(this.toContextRate(new Int16Array(msg.pcm), msg.rate));
    };
  }

  toContextRate(pcm, rate) {
    const n = Math.round((pcm.length * sampleRate) / rate);
    const out = new Float32Array(n);
    const step = rate / sampleRate;
    for (let k = 0; k < n; k++) {
      const x = k * step;
      const i = Math.floor(x);
      const a = pcm[Math.min(i, pcm.length - 1)];
      const b = pcm[Math.min(i + 1, pcm.length - 1)];
      out[k] = (a + (b - a) * (x - i)) / 0x8000;
    }
    return out;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    let k = 0;
    while (k < out.length && this.queue.length) {
      const head = this.queue[0];
      const take = Math.min(out.length - k, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + take), k);
      k += take;
      this.offset += take;
      if (this.offset === head.length) {
        this.queue.shift();
        this.offset = 0;
        this.played++;
      }
    }
    out.fill(0, k);
    this.samples += out.length;
    if (this.samples >= sampleRate / 10) {
      this.samples = 0;
      this.port.postMessage({ played: this.played, queued: this.queue.length });
    }
    return true;
  }
}

registerProcessor("capture", Capture);
registerProcessor("playback", Playback);
