// `pnpm kernel-map`: collect the `@kernel <file> <symbol>` doc tags into docs/kernel-map.md.

import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

/** A source file to scan: its path relative to the repository root (with `/`), and its text. */
export interface KernelMapSource {
  readonly path: string;
  readonly text: string;
}

/** One `@kernel` tag, tied to the iommu-sim declaration its doc comment sits on. */
export interface KernelTag {
  /** The kernel source file, as written in the tag (`drivers/iommu/iommu.c`). */
  readonly kernelFile: string;
  /** The kernel symbol (`iommu_attach_device`, `struct iommu_domain`); "" for the whole file. */
  readonly symbol: string;
  /** The iommu-sim declaration: `Name`, or `Container.member` for a member. */
  readonly name: string;
  /** The source file of the declaration, relative to the repository root. */
  readonly path: string;
  /** The 1-based line of the tag. */
  readonly line: number;
}

/** A tag that cannot go into the map: malformed, or not on a declaration. */
export interface KernelTagProblem {
  readonly path: string;
  readonly line: number;
  readonly message: string;
}

const USAGE = "usage: kernel-map [--check]";
const MAP_PATH = "docs/kernel-map.md";
const WORKSPACES = ["packages", "apps"];
/** `@kernel` as a tag: at the start of a comment line or after a blank, not inside a word. */
const TAG = /(?<=^|[\s*])@kernel(?![\w-])/g;
/** A kernel source path: at least one directory, e.g. `lib/idr.c`, `include/linux/iommu.h`. */
const KERNEL_PATH = /^[\w.+-]+(?:\/[\w.+-]+)+$/;
/** Words that belong to the symbol that follows them: `struct misc_cg`. */
const TYPE_KEYWORDS = new Set(["struct", "union", "enum"]);

/**
 * Find every `@kernel` tag in `files` and tie it to the declaration that follows its doc comment:
 * a top-level class, function, variable, interface, type alias, enum or namespace (`Name`), or a
 * member of one (`Class.member`, `Interface.member`, `Enum.member`, `obj.method` for an object
 * literal). A tag is `@kernel <kernel-file> <symbol>`; a tag with only the file names the whole
 * file. The tag belongs in the doc comment; a `//` comment right above the declaration also counts.
 * Problems: a tag without a kernel path, with words after the symbol, or in a comment that is not
 * right above such a declaration.
 */
export function collectKernelTags(files: readonly KernelMapSource[]): {
  tags: KernelTag[];
  problems: KernelTagProblem[];
} {
  const tags: KernelTag[] = [];
  const problems: KernelTagProblem[] = [];
  for (const file of files) collectFromFile(file, tags, problems);
  return { tags, problems };
}

function collectFromFile(file: KernelMapSource, tags: KernelTag[], problems: KernelTagProblem[]) {
  const { text } = file;
  const sf = ts.createSourceFile(file.path, text, ts.ScriptTarget.ES2023, true, ts.ScriptKind.TS);
  const lineOf = (offset: number) => sf.getLineAndCharacterOfPosition(offset).line + 1;
  const claimed: Array<[number, number]> = [];

  const claim = (node: ts.Node, names: readonly string[]): void => {
    for (const range of ts.getLeadingCommentRanges(text, node.pos) ?? []) {
      // Doc comments are the rule; a `//` comment right above a declaration counts the same.
      const comment = text.slice(range.pos, range.end);
      claimed.push([range.pos, range.end]);
      for (const match of comment.matchAll(TAG)) {
        const offset = range.pos + (match.index ?? 0);
        const parsed = parseTag(comment, (match.index ?? 0) + match[0].length);
        if (typeof parsed === "string") {
          problems.push({ path: file.path, line: lineOf(offset), message: parsed });
          continue;
        }
        for (const name of names) {
          tags.push({ ...parsed, name, path: file.path, line: lineOf(offset) });
        }
      }
    }
  };

  visitStatements(sf.statements, "", sf, claim);

  for (const match of text.matchAll(TAG)) {
    const offset = match.index ?? 0;
    if (claimed.some(([start, end]) => offset >= start && offset < end)) continue;
    problems.push({
      path: file.path,
      line: lineOf(offset),
      message: "@kernel tag is not in a comment on a declaration",
    });
  }
}

/** The file and symbol of the tag whose arguments start at `from` in `comment`, or a problem. */
function parseTag(comment: string, from: number): { kernelFile: string; symbol: string } | string {
  let rest = comment.slice(from);
  const eol = rest.indexOf("\n");
  if (eol !== -1) rest = rest.slice(0, eol);
  rest = rest.replace(/\*\/.*$/, "");
  // Another tag on the same line ends this one.
  const next = rest.search(/\s@\w/);
  if (next !== -1) rest = rest.slice(0, next);
  const words = rest.trim().split(/\s+/).filter(Boolean);
  const shape = "expected `@kernel <kernel-file> <symbol>`";
  if (words.length === 0) return `malformed @kernel tag: ${shape}, got nothing`;
  const [kernelFile, ...symbolWords] = words;
  if (!KERNEL_PATH.test(kernelFile)) {
    return `malformed @kernel tag: ${shape}; "${kernelFile}" is not a kernel source path`;
  }
  const symbolLength = TYPE_KEYWORDS.has(symbolWords[0] ?? "") ? 2 : 1;
  if (symbolWords.length > symbolLength) {
    return `malformed @kernel tag: ${shape}; unexpected "${symbolWords.slice(symbolLength).join(" ")}" after the symbol`;
  }
  if (symbolLength === 2 && symbolWords.length < 2) {
    return `malformed @kernel tag: ${shape}; "${symbolWords[0]}" needs a name`;
  }
  return { kernelFile, symbol: symbolWords.join(" ") };
}

type Claim = (node: ts.Node, names: readonly string[]) => void;

function visitStatements(
  statements: ts.NodeArray<ts.Statement>,
  prefix: string,
  sf: ts.SourceFile,
  claim: Claim,
): void {
  for (const s of statements) {
    if (ts.isFunctionDeclaration(s)) {
      claim(s, [prefix + (s.name?.text ?? "default")]);
    } else if (ts.isClassDeclaration(s)) {
      const name = prefix + (s.name?.text ?? "default");
      claim(s, [name]);
      visitMembers(s.members, name, sf, claim);
    } else if (ts.isInterfaceDeclaration(s)) {
      const name = prefix + s.name.text;
      claim(s, [name]);
      visitMembers(s.members, name, sf, claim);
    } else if (ts.isTypeAliasDeclaration(s)) {
      const name = prefix + s.name.text;
      claim(s, [name]);
      if (ts.isTypeLiteralNode(s.type)) visitMembers(s.type.members, name, sf, claim);
    } else if (ts.isEnumDeclaration(s)) {
      const name = prefix + s.name.text;
      claim(s, [name]);
      visitMembers(s.members, name, sf, claim);
    } else if (ts.isVariableStatement(s)) {
      const declarations = s.declarationList.declarations.filter((d) => ts.isIdentifier(d.name));
      claim(
        s,
        declarations.map((d) => prefix + (d.name as ts.Identifier).text),
      );
      for (const d of declarations) {
        const object = objectLiteral(d.initializer);
        if (object)
          visitMembers(object.properties, prefix + (d.name as ts.Identifier).text, sf, claim);
      }
    } else if (ts.isModuleDeclaration(s) && s.body && ts.isModuleBlock(s.body)) {
      const name = prefix + s.name.text;
      claim(s, [name]);
      visitStatements(s.body.statements, `${name}.`, sf, claim);
    }
  }
}

function visitMembers(
  members: ts.NodeArray<ts.Node>,
  container: string,
  sf: ts.SourceFile,
  claim: Claim,
): void {
  for (const m of members) {
    if (ts.isConstructorDeclaration(m)) {
      claim(m, [`${container}.constructor`]);
      continue;
    }
    const nameNode = (m as { name?: ts.Node }).name;
    if (nameNode === undefined) continue;
    const name = `${container}.${memberName(nameNode, sf)}`;
    claim(m, [name]);
    if (ts.isPropertyAssignment(m)) {
      const object = objectLiteral(m.initializer);
      if (object) visitMembers(object.properties, name, sf, claim);
    }
  }
}

function memberName(node: ts.Node, sf: ts.SourceFile): string {
  if (ts.isIdentifier(node) || ts.isPrivateIdentifier(node)) return node.text;
  if (ts.isStringLiteral(node) || ts.isNumericLiteral(node)) return node.text;
  return node.getText(sf);
}

/** The object literal an initializer holds, through `as`, `satisfies`, parentheses and freeze. */
function objectLiteral(node: ts.Expression | undefined): ts.ObjectLiteralExpression | undefined {
  let e = node;
  while (e !== undefined) {
    if (ts.isObjectLiteralExpression(e)) return e;
    if (ts.isAsExpression(e) || ts.isSatisfiesExpression(e) || ts.isParenthesizedExpression(e)) {
      e = e.expression;
    } else if (
      ts.isCallExpression(e) &&
      e.arguments.length === 1 &&
      e.expression.getText() === "Object.freeze"
    ) {
      e = e.arguments[0];
    } else {
      return undefined;
    }
  }
  return undefined;
}

/** Order by UTF-16 code units, the same on every machine and locale. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * docs/kernel-map.md for `tags`: a header, then one table per kernel file (files sorted), rows
 * sorted by kernel symbol (ignoring case and leading underscores), then by iommu-sim name and
 * file; identical rows appear once. The
 * output depends only on the set of tags, not on their order or line numbers.
 */
export function renderKernelMap(tags: readonly KernelTag[]): string {
  const byFile = new Map<string, Map<string, KernelTag>>();
  for (const tag of tags) {
    let rows = byFile.get(tag.kernelFile);
    if (rows === undefined) {
      rows = new Map();
      byFile.set(tag.kernelFile, rows);
    }
    rows.set(`${tag.symbol}\0${tag.name}\0${tag.path}`, tag);
  }
  const files = [...byFile.keys()].sort(compare);
  const rowCount = files.reduce((n, f) => n + (byFile.get(f)?.size ?? 0), 0);

  const out: string[] = [
    "# Kernel map",
    "",
    "Where each kernel symbol has its counterpart in iommu-sim: the `@kernel <file> <symbol>` tags",
    "of the doc comments in `packages/*/src` and `apps/*/src`, by kernel file. A tag without a",
    "symbol marks a counterpart of the whole file.",
    "",
    "Generated by `scripts/kernel-map.ts`: do not edit. Regenerate with",
    "`npx -y pnpm@10.34.9 kernel-map`; CI runs `kernel-map --check`, which fails when this file is",
    "stale.",
    "",
    `${rowCount} ${rowCount === 1 ? "entry" : "entries"} for ${files.length} kernel ${files.length === 1 ? "file" : "files"}.`,
  ];
  for (const file of files) {
    const rows = [...(byFile.get(file)?.values() ?? [])].sort(
      (a, b) =>
        compare(symbolKey(a.symbol), symbolKey(b.symbol)) ||
        compare(a.symbol, b.symbol) ||
        compare(a.name, b.name) ||
        compare(a.path, b.path),
    );
    out.push(
      "",
      `## \`${file}\``,
      "",
      "| kernel symbol | iommu-sim | file |",
      "| --- | --- | --- |",
    );
    for (const r of rows) {
      const symbol = r.symbol === "" ? "*(whole file)*" : code(r.symbol);
      out.push(`| ${symbol} | ${code(r.name)} | [${cell(r.path)}](../${r.path}) |`);
    }
  }
  return `${out.join("\n")}\n`;
}

/** `__free_iova` next to `free_iova`, `IOMMU_READ` among the i's: no case, no leading `_`. */
function symbolKey(symbol: string): string {
  return symbol.replace(/^_+/, "").toLowerCase();
}

function cell(s: string): string {
  return s.replace(/\|/g, "\\|");
}

function code(s: string): string {
  return `\`${cell(s)}\``;
}

/** The .ts sources under `packages/*\/src` and `apps/*\/src`, tests excluded, sorted. */
export function listSources(root: string): string[] {
  const found: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== "node_modules" && !entry.name.startsWith(".")) walk(full);
      } else if (
        entry.isFile() &&
        entry.name.endsWith(".ts") &&
        !entry.name.endsWith(".test.ts") &&
        !entry.name.endsWith(".d.ts")
      ) {
        found.push(path.relative(root, full).split(path.sep).join("/"));
      }
    }
  };
  for (const workspace of WORKSPACES) {
    const base = path.join(root, workspace);
    if (!existsSync(base)) continue;
    for (const entry of readdirSync(base, { withFileTypes: true })) {
      const src = path.join(base, entry.name, "src");
      if (entry.isDirectory() && existsSync(src)) walk(src);
    }
  }
  return found.sort(compare);
}

/** The command: write docs/kernel-map.md, or with `--check` compare it. Returns the exit code. */
export function main(args: readonly string[], root: string): number {
  const check = args.includes("--check");
  const unknown = args.filter((a) => a !== "--check" && a !== "--");
  if (unknown.length > 0) {
    process.stderr.write(`kernel-map: unknown argument "${unknown[0]}" (${USAGE})\n`);
    return 2;
  }
  const files = listSources(root).map((p) => ({
    path: p,
    text: readFileSync(path.join(root, p), "utf8"),
  }));
  const { tags, problems } = collectKernelTags(files);
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`${p.path}:${p.line}: ${p.message}\n`);
    return 2;
  }
  const rendered = renderKernelMap(tags);
  const target = path.join(root, MAP_PATH);
  const current = existsSync(target) ? readFileSync(target, "utf8") : undefined;
  if (check) {
    if (current !== rendered) {
      process.stderr.write(`${MAP_PATH} is stale: run \`pnpm kernel-map\`\n`);
      return 1;
    }
    process.stdout.write(`${MAP_PATH} is up to date\n`);
    return 0;
  }
  if (current !== rendered) {
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, rendered);
  }
  process.stdout.write(`${MAP_PATH}: ${tags.length} tags from ${files.length} files\n`);
  return 0;
}

function isEntryPoint(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(path.resolve(script)) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

if (isEntryPoint(import.meta.url)) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
  process.exitCode = main(process.argv.slice(2), root);
}
