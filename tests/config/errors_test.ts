import { deepStrictEqual as eq, ok } from "node:assert/strict";
import { ConfigError, parseOverride } from "../../config/mod.ts";
import { BasedError } from "../../errors.ts";

Deno.test("config/errors: a ConfigError is one of the program's user errors (BasedError)", () => {
  const e = new ConfigError("bad key", "use another");
  eq(e.message, "bad key (use another)");
  ok(e instanceof BasedError, "ConfigError carries the user-error mark");
  ok(new BasedError("x") instanceof BasedError);
  ok(!(new Error("x") instanceof BasedError), "a plain Error is not a user error");
  ok(!(new RangeError("x") instanceof BasedError));
  try {
    parseOverride("=x");
    ok(false, "no error");
  } catch (err) {
    ok(err instanceof ConfigError && err instanceof BasedError, String(err));
  }
});
