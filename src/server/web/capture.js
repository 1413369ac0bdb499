// seesay's microphone capture, an AudioWorklet: the input's first channel, averaged down to
// 16 kHz (each output sample is the mean of the input samples it covers, a cheap low-pass),
// posted to the page as 16-bit PCM in 20 ms messages.
class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const rate = (options.processorOptions && options.processorOptions.rate) || 16000;
    this.step = sampleRate / rate; // input samples per output sample
    this.t = 0;
    this.sum = 0;
    this.count = 0;
    this.frame = rate / 50;
    this.buf = new Int16Array(this.frame);
    this.n = 0;
    this.silence = new Float32Array(128);
  }

  process(inputs) {
    // No microphone (or none yet): silence, so that the conversation goes on for typed questions
    // (the server closes a client that sends nothing for a while).
    const ch = (inputs[0] && inputs[0][0]) || this.silence;
    for (let i = 0; i < ch.length; i++) {
      this.sum += ch[i];
      this.count += 1;
      this.t += 1;
      if (this.t >= this.step) {
        this.t -= this.step;
        const v = Math.max(-1, Math.min(1, this.sum / this.count));
        this.sum = 0;
        this.count = 0;
        this.buf[this.n++] = Math.round(v * 32767);
        if (this.n === this.frame) {
          this.port.postMessage(this.buf.buffer, [this.buf.buffer]);
          this.buf = new Int16Array(this.frame);
          this.n = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("capture", Capture);
