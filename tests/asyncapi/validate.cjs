// Parse AsyncAPI documents with the official parser and print its diagnostics as JSON:
// {"<file>": [{"code", "severity", "message", "path"}], ...}. Severity: 0 error, 1 warning,
// 2 information, 3 hint (Spectral's). Usage: node validate.cjs <install dir> <file>...
const fs = require("fs");
const path = require("path");

const [installDir, ...files] = process.argv.slice(2);
const { Parser } = require(path.join(installDir, "node_modules", "@asyncapi", "parser"));

(async () => {
  const parser = new Parser();
  const out = {};
  for (const file of files) {
    const { diagnostics } = await parser.parse(fs.readFileSync(file, "utf8"));
    out[file] = diagnostics.map((d) => ({
      code: String(d.code),
      severity: d.severity,
      message: d.message,
      path: d.path.map(String),
    }));
  }
  process.stdout.write(JSON.stringify(out));
})().catch((err) => {
  process.stderr.write(String((err && err.stack) || err));
  process.exit(2);
});
