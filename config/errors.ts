/**
 * The package's one error type: every failure of composition, overrides,
 * interpolation or a typed read is a ConfigError whose message is one line
 * saying what is wrong and, in parentheses, what to do.
 *
 * It carries the user-error mark `Symbol.for("based.user-error")` (a key any
 * program can make without importing this package), so an application whose
 * own error type checks for that mark treats these errors as its own
 * one-line user errors.
 */
export const USER_ERROR: unique symbol = Symbol.for("based.user-error");

export class ConfigError extends Error {
  readonly [USER_ERROR] = true;
  constructor(message: string, readonly hint?: string) {
    super(hint ? `${message} (${hint})` : message);
    this.name = "ConfigError";
  }
}
