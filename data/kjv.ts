/**
 * The bundled corpus: the King James Bible (public domain; Debian package
 * bible-kjv-text, see corpora/SOURCE.md), embedded as gzip + base64 text so
 * that it travels inside a `deno compile` binary (text imports are stable,
 * byte imports are not).
 *
 * Rows: one per line (verse), keeping its "\n"; with `stripReferences` (the
 * default) the leading verse reference (`Ge1:1 `) is removed first. Rows are
 * then tokenised like WikiText rows (non-empty row → ids + EOS).
 *
 * Split rule (by line, before anything else): with n = 31,102 lines and
 * k = floor(n / 100) = 311, the last k lines are `test`, the k lines before
 * them `validation`, the first n − 2k = 30,480 lines `train` (so validation and
 * test are the end of Revelation).
 */
import KJV_GZ_B64 from "./corpora/kjv.txt.gz.b64" with { type: "text" };
import { BasedError } from "../errors.ts";
import { isBlank } from "./rows.ts";
import type { Split } from "./wikitext.ts";

export const KJV_SHA256 = "cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d";
export const KJV_LINES = 31102;
/** The row rule's name in cache metadata. */
export const KJV_RECIPE = "kjv-lines/1";

/** The gzip bytes of kjv.txt as embedded. */
export function kjvGzipBytes(): Uint8Array {
  const bin = atob(KJV_GZ_B64.replace(/\s+/g, ""));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

let cached: Promise<Uint8Array<ArrayBuffer>> | null = null;

/** The bytes of kjv.txt (verified against its sha256). */
export function kjvBytes(): Promise<Uint8Array<ArrayBuffer>> {
  cached ??= (async () => {
    const stream = new Blob([kjvGzipBytes() as Uint8Array<ArrayBuffer>]).stream()
      .pipeThrough(new DecompressionStream("gzip"));
    const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
    const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const hex = Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
    if (hex !== KJV_SHA256) {
      throw new BasedError(
        "the bundled KJV corpus is damaged (sha256 mismatch)",
        "restore data/corpora/",
      );
    }
    return bytes;
  })();
  return cached;
}

/** The text of kjv.txt. */
export async function kjvText(): Promise<string> {
  return new TextDecoder().decode(await kjvBytes());
}

/** Removes the verse reference at the start of each line (`/^\S+?\d+:\d+ /gm`). */
export function stripVerseReferences(line: string): string {
  return line.replace(/^\S+?\d+:\d+ /, "");
}

/** The rows of each split of the bundled corpus (split rule in the module comment). */
export function kjvSplitRows(
  text: string,
  o: { stripReferences?: boolean } = {},
): Record<Split, string[]> {
  const strip = o.stripReferences ?? true;
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  const rows = lines.map((l) => {
    const r = (strip ? stripVerseReferences(l) : l) + "\n";
    return isBlank(r) ? "" : r;
  });
  const k = Math.floor(rows.length / 100);
  const n = rows.length;
  return {
    train: rows.slice(0, n - 2 * k),
    validation: rows.slice(n - 2 * k, n - k),
    test: rows.slice(n - k),
  };
}
