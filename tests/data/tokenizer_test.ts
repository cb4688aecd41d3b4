/** GPT-2 tokenizer: constants, known ids, the EOS rule, stateless decoding. */
import {
  deepStrictEqual as assertEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import {
  decode,
  encode,
  encodeRow,
  EOS,
  TOKENIZER_ID,
  TokenStreamDecoder,
  VOCAB_SIZE,
} from "../../data/tokenize/mod.ts";

Deno.test("tokenizer: constants", () => {
  assertEquals(EOS, 50256);
  assertEquals(VOCAB_SIZE, 50257);
  assert(TOKENIZER_ID.length > 0);
});

Deno.test("tokenizer: known GPT-2 ids", () => {
  // first heading of WikiText-103 test; ids as HF GPT2TokenizerFast gives them
  assertEquals(encode(" = Robert Boulter = \n"), [796, 5199, 347, 2852, 353, 796, 220, 198]);
  assertEquals(encode("hello world"), [31373, 995]);
  assertEquals(encode(""), []);
});

Deno.test("tokenizer: the text <|endoftext|> maps to 50256 (as HF), rows append the id", () => {
  assertEquals(encode("a<|endoftext|>b"), [...encode("a"), EOS, ...encode("b")]);
  assertEquals(encode("<|endoftext|>"), [EOS]);
  assertEquals(encodeRow(""), []);
  assertEquals(encodeRow("x\n"), [...encode("x\n"), EOS]);
  assertEquals(encodeRow("x\n", false), encode("x\n"));
});

Deno.test("tokenizer: decode is the inverse of encode and stateless", () => {
  const s = " The Valkyria @-@ Chronicles III , héllo 日本 <unk> \n";
  assertEquals(decode(encode(s)), s);
  assertEquals(decode([EOS]), "<|endoftext|>");
  // a character split over ids: decoding one id alone gives U+FFFD and leaves no state behind
  const ids = encode("日");
  assert(ids.length > 1);
  assertEquals(decode([ids[0]]), "\ufffd");
  assertEquals(decode(ids), "日");
  assertThrows(() => decode([VOCAB_SIZE]), RangeError);
});

Deno.test("tokenizer: TokenStreamDecoder emits characters once complete", () => {
  const s = "ab 日本語 ✓ x";
  const d = new TokenStreamDecoder();
  const parts = encode(s).map((id) => d.push(id));
  assertEquals(parts.join("") + d.flush(), s);
  assert(!parts.some((p) => p.includes("\ufffd")));
});
