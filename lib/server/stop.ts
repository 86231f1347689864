/**
 * Stop strings over a stream of text pieces: text is passed on as soon as it can no longer be the start of a stop
 * string, and the stream ends at the first stop string (which is not passed on), as OpenAI's `stop` does.
 */
export class StopScanner {
  /** Text held back: it may be the start of a stop string. */
  private held = '';
  stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  /** The text that can be passed on after `piece`; `stopped` turns true at a stop string. */
  push(piece: string): string {
    if (this.stopped) return '';
    if (this.stops.length === 0) return piece;
    const text = this.held + piece;
    let cut = -1;
    for (const s of this.stops) {
      const at = text.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.held = '';
      return text.slice(0, cut);
    }
    // Hold back the longest end of the text that a stop string starts with.
    let keep = 0;
    for (const s of this.stops)
      for (let k = Math.min(s.length - 1, text.length); k > keep; k--)
        if (text.endsWith(s.slice(0, k))) {
          keep = k;
          break;
        }
    this.held = text.slice(text.length - keep);
    return text.slice(0, text.length - keep);
  }

  /** At the end of the generation: what was held back. */
  flush(): string {
    const rest = this.stopped ? '' : this.held;
    this.held = '';
    return rest;
  }
}
