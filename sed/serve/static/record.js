// Microphone recording for the page: getUserMedia -> AudioContext -> an AudioWorklet tap -> Float32 PCM ->
// a 16-bit mono WAV blob, posted like an uploaded file.

/** A WAV file (RIFF, 16-bit PCM, mono) of the float samples in [-1, 1]. */
export function wavBlob(samples, sampleRate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (o, s) => [...s].forEach((ch, i) => view.setUint8(o + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true); // byte rate
  view.setUint16(32, 2, true); // block align
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([view], { type: "audio/wav" });
}

/**
 * Start recording. `sampleRate`: the model's rate (the context records at it when the browser can, else at its
 * own rate; the service resamples). `maxSeconds`: the recording stops itself there. `onTick(seconds)` is called
 * as audio arrives. Resolves to {stop(): Promise<{blob, seconds}>}; rejects with a readable Error.
 */
export async function startRecording(sampleRate, maxSeconds, onTick) {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    throw new Error("recording needs https or localhost: the browser blocks the microphone on plain http");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (e) {
    throw new Error(`no microphone: ${e.message || e.name}`);
  }
  let ctx;
  try {
    ctx = new AudioContext({ sampleRate });
  } catch {
    ctx = new AudioContext(); // a rate the browser refuses: record at its own, the service resamples
  }
  await ctx.resume(); // a context made after an await may start suspended
  await ctx.audioWorklet.addModule("/static/recorder-worklet.js");
  const source = ctx.createMediaStreamSource(stream);
  const tap = new AudioWorkletNode(ctx, "sed-tap");
  const chunks = [];
  let count = 0;
  let done = null;
  const limit = Math.floor(maxSeconds * ctx.sampleRate);
  const finish = async () => {
    if (!done) {
      done = (async () => {
        tap.port.onmessage = null;
        source.disconnect();
        tap.disconnect();
        stream.getTracks().forEach((t) => t.stop());
        await ctx.close();
        const pcm = new Float32Array(count);
        let o = 0;
        for (const c of chunks) {
          pcm.set(c, o);
          o += c.length;
        }
        return { blob: wavBlob(pcm, ctx.sampleRate), seconds: count / ctx.sampleRate };
      })();
    }
    return done;
  };
  const recorder = { stop: finish, onLimit: null };
  tap.port.onmessage = ({ data }) => {
    const room = limit - count;
    if (room <= 0) return;
    const block = data.length > room ? data.subarray(0, room) : data;
    chunks.push(block);
    count += block.length;
    onTick(count / ctx.sampleRate);
    if (count >= limit && recorder.onLimit) recorder.onLimit();
  };
  source.connect(tap);
  tap.connect(ctx.destination); // a node must reach the destination to be pulled; the tap outputs silence
  return recorder;
}
