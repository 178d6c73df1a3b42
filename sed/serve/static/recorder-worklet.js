// AudioWorklet processor for the page's recorder: hands each block of the first input channel to the page.
class Tap extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("sed-tap", Tap);
