/**
 * A minimal, safe reader of Python pickles (protocols 2 to 5), enough for a
 * `torch.save`d state_dict and nothing more. It never runs code: the opcodes
 * that build Python objects from arbitrary classes (INST, OBJ, NEWOBJ, EXT*,
 * ...) are refused, GLOBAL/STACK_GLOBAL are accepted only for the names the
 * caller allows (checked when the opcode is read, before anything uses it),
 * and REDUCE / persistent ids are handed to the caller's hooks, which build
 * plain data (see hf/torch_load.ts). Anything else is a one-line error that
 * names the opcode or the global and its byte offset.
 */
import { BasedError } from "../errors.ts";

/** A global (`module.name`) the pickle refers to. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A Python tuple (arrays are lists). */
export class PyTuple {
  constructor(readonly items: unknown[]) {}
}

export interface UnpickleHooks {
  /** `module.name` of every global the pickle may name */
  allowed: ReadonlySet<string>;
  /** BINPERSID: the object for a persistent id (torch: a storage reference) */
  persistentLoad(pid: unknown): unknown;
  /** REDUCE: `fn(*args)` for an allowed global */
  call(fn: PyGlobal, args: unknown[]): unknown;
}

/** Opcode names for the error message of a refused opcode. */
const OPCODE_NAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4c: "LONG",
  0x4d: "BININT2",
  0x4e: "NONE",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x58: "BINUNICODE",
  0x61: "APPEND",
  0x62: "BUILD",
  0x63: "GLOBAL",
  0x64: "DICT",
  0x7d: "EMPTY_DICT",
  0x65: "APPENDS",
  0x67: "GET",
  0x68: "BINGET",
  0x69: "INST",
  0x6a: "LONG_BINGET",
  0x6c: "LIST",
  0x5d: "EMPTY_LIST",
  0x6f: "OBJ",
  0x70: "PUT",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x73: "SETITEM",
  0x74: "TUPLE",
  0x29: "EMPTY_TUPLE",
  0x75: "SETITEMS",
  0x47: "BINFLOAT",
  0x80: "PROTO",
  0x81: "NEWOBJ",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x8a: "LONG1",
  0x8b: "LONG4",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

/** Unpickles `data`; `source` names the file in errors. */
export function unpickle(data: Uint8Array, hooks: UnpickleHooks, source: string): unknown {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const dec = new TextDecoder("utf-8", { fatal: true });
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let p = 0;
  let op = 0, opAt = 0;

  const bad = (what: string): never => {
    throw new BasedError(
      `${source}: refusing to load: ${what}`,
      "a state_dict holds only tensors, numbers and strings; do not load this file",
    );
  };
  const damaged = (what: string): never => {
    throw new BasedError(
      `${source}: damaged pickle at byte ${opAt}: ${what}`,
      "the file is truncated or corrupt; download it again",
    );
  };
  const need = (n: number) => {
    if (p + n > data.length) damaged("it ends inside an opcode");
  };
  const u8 = () => (need(1), data[p++]);
  const u16 = () => (need(2), p += 2, dv.getUint16(p - 2, true));
  const u32 = () => (need(4), p += 4, dv.getUint32(p - 4, true));
  const u64 = () => {
    need(8);
    p += 8;
    const v = dv.getBigUint64(p - 8, true);
    if (v > BigInt(data.length)) damaged("a length past the end of the data");
    return Number(v);
  };
  const bytes = (n: number) => (need(n), p += n, data.subarray(p - n, p));
  const text = (n: number) => {
    try {
      return dec.decode(bytes(n));
    } catch (e) {
      if (e instanceof BasedError) throw e;
      return damaged("a string that is not UTF-8");
    }
  };
  const line = () => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) damaged("a GLOBAL name without its newline");
    const s = text(end - p);
    p++;
    return s;
  };
  const pop = () => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) {
      damaged(`${OPCODE_NAMES[op]} on an empty stack`);
    }
    return stack.pop();
  };
  const top = () => {
    if (stack.length === 0) damaged(`${OPCODE_NAMES[op]} on an empty stack`);
    return stack[stack.length - 1];
  };
  const popMark = () => {
    const m = marks.pop();
    if (m === undefined) damaged(`${OPCODE_NAMES[op]} without a MARK`);
    return stack.splice(m!);
  };
  const global = (module: string, name: string) => {
    const g = new PyGlobal(module, name);
    if (!hooks.allowed.has(g.qualified)) bad(`the pickle names the global ${g.qualified}`);
    return g;
  };
  const setItems = (d: unknown, kv: unknown[]) => {
    if (!(d instanceof Map)) damaged("SETITEM(S) on something that is not a dict");
    for (let i = 0; i + 1 < kv.length; i += 2) (d as Map<unknown, unknown>).set(kv[i], kv[i + 1]);
  };
  const get = (i: number) => {
    if (!memo.has(i)) damaged(`memo entry ${i} used before it was set`);
    return memo.get(i);
  };

  while (true) {
    opAt = p;
    if (p >= data.length) damaged("no STOP opcode (truncated?)");
    op = data[p++];
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) damaged("pickle protocol above 5");
        break;
      case 0x95: // FRAME: a length hint only
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) damaged(`STOP with ${stack.length} values on the stack`);
        return stack[0];
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new PyTuple([]));
        break;
      case 0x74: // TUPLE
        stack.push(new PyTuple(popMark()));
        break;
      case 0x85: // TUPLE1
        stack.push(new PyTuple([pop()]));
        break;
      case 0x86: { // TUPLE2
        const b = pop(), a = pop();
        stack.push(new PyTuple([a, b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop(), a = pop();
        stack.push(new PyTuple([a, b, c]));
        break;
      }
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x64: { // DICT
        const d = new Map();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        const l = top();
        if (!Array.isArray(l)) damaged("APPEND to something that is not a list");
        (l as unknown[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const l = top();
        if (!Array.isArray(l)) damaged("APPENDS to something that is not a list");
        (l as unknown[]).push(...items);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop(), k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
        stack.push(get(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(get(u32()));
        break;
      case 0x4a: // BININT
        need(4);
        p += 4;
        stack.push(dv.getInt32(p - 4, true));
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: { // LONG1: little-endian two's complement
        const b = bytes(u8());
        let v = 0n;
        for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (b.length && b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
        stack.push(Number.isSafeInteger(Number(v)) ? Number(v) : v);
        break;
      }
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        p += 8;
        stack.push(dv.getFloat64(p - 8, false));
        break;
      case 0x58: // BINUNICODE
        stack.push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(text(u64()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()).slice());
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()).slice());
        break;
      case 0x63: { // GLOBAL
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          damaged("STACK_GLOBAL without two strings");
        }
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x51: // BINPERSID
        stack.push(hooks.persistentLoad(pop()));
        break;
      case 0x52: { // REDUCE
        const args = pop(), fn = pop();
        if (!(fn instanceof PyGlobal)) bad("REDUCE calls something that is not an allowed global");
        if (!(args instanceof PyTuple)) damaged("REDUCE arguments are not a tuple");
        stack.push(hooks.call(fn as PyGlobal, (args as PyTuple).items));
        break;
      }
      case 0x62: { // BUILD: only an OrderedDict's attributes (state_dict._metadata), dropped
        pop();
        if (!(top() instanceof Map)) bad("BUILD sets the state of an object that is not a dict");
        break;
      }
      default:
        bad(
          `pickle opcode ${OPCODE_NAMES[op] ?? "unknown"} (0x${op.toString(16)}) at byte ${opAt}`,
        );
    }
  }
}
