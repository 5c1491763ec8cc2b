// Validates custom resources (JSON array on stdin) against their CRDs'
// OpenAPI schemas, as packaged by @kubernetes-models (installed by
// `cargo xtask setup`): argv[2] is the package's directory, argv[3] the
// apiVersion its objects must have (e.g. `monitoring.coreos.com/v1`,
// `cert-manager.io/v1`).
// Prints one line per object, "ok <kind>/<name>" or
// "invalid <kind>/<name>: <why>", and exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const apiVersion = process.argv[3];
const models = join(process.argv[2], apiVersion, "index.js");
const group = await import(pathToFileURL(models).href);
const objects = JSON.parse(readFileSync(0, "utf8"));
let invalid = 0;
for (const object of objects) {
  const name = `${object.kind}/${object.metadata?.name}`;
  const Model = group[object.kind];
  if (!Model || object.apiVersion !== apiVersion) {
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
