/**
 * One error type for every user-facing failure: a single line that says what
 * went wrong and what to do. The CLI prints `error: <message>` and exits 1.
 *
 * The mark `Symbol.for("based.user-error")` makes an error a user error:
 * BasedError sets it, and so does the config package's ConfigError (config/
 * imports nothing from the program), so `e instanceof BasedError` holds for
 * both: `instanceof` checks the mark, not the class.
 */
const USER_ERROR: unique symbol = Symbol.for("based.user-error");

export class BasedError extends Error {
  readonly [USER_ERROR] = true;
  constructor(message: string, readonly hint?: string) {
    super(hint ? `${message} (${hint})` : message);
    this.name = "BasedError";
  }

  /** True for every error carrying the user-error mark (BasedError, config's ConfigError). */
  static override [Symbol.hasInstance](x: unknown): boolean {
    return x instanceof Error &&
      (x as Partial<Record<typeof USER_ERROR, boolean>>)[USER_ERROR] === true;
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
