/**
 * One error type for every user-facing failure: a single line that says what
 * went wrong and what to do. The CLI prints `error: <message>` and exits 1.
 */
export class BasedError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(hint ? `${message} (${hint})` : message);
    this.name = "BasedError";
  }
}

/** Bytes as a short human string: 1536 -> "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}
