// Validates prometheus-operator objects (JSON array on stdin) against the
// CRDs' OpenAPI schemas, as packaged by @kubernetes-models/prometheus-operator
// (installed by `cargo xtask setup`; its directory is argv[2]).
// Prints one line per object, "ok <kind>/<name>" or
// "invalid <kind>/<name>: <why>", and exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const models = join(process.argv[2], "monitoring.coreos.com/v1/index.js");
const v1 = await import(pathToFileURL(models).href);
const objects = JSON.parse(readFileSync(0, "utf8"));
let invalid = 0;
for (const object of objects) {
  const name = `${object.kind}/${object.metadata?.name}`;
  const Model = v1[object.kind];
  if (!Model || object.apiVersion !== "monitoring.coreos.com/v1") {
    console.log(`invalid ${name}: no schema for ${object.apiVersion} ${object.kind}`);
    invalid++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`ok ${name}`);
  } catch (error) {
    console.log(`invalid ${name}: ${error.message}`);
    invalid++;
  }
}
process.exit(invalid ? 1 : 0);
