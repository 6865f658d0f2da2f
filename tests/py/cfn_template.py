"""Helpers for the template checks: load template.yaml, translate it, read its state machine.

    python cfn_template.py translate TEMPLATE OUT.json   SAM -> CloudFormation JSON (samtranslator)
    python cfn_template.py checkov-report CHECKOV.json TRANSLATED.json
                                                         summarise checkov's JSON; exit 1 on a
                                                         failed check or an unchecked IAM policy

The loader is our own (PyYAML plus a constructor for CloudFormation's short-form tags),
so the tests do not read the template through the tools they check it against.
"""
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.environ.get("FANOUT_TEMPLATE") or os.path.join(ROOT, "template.yaml")


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns !Ref X into {"Ref": X}, !GetAtt A.B into {"Fn::GetAtt": [A, B]},
    !Sub/!If/... into {"Fn::Sub": ...}, the long form CloudFormation uses in JSON."""


def _construct_tag(loader, tag_suffix, node):
    tag = tag_suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag in ("Ref", "Condition"):
        return {tag: value}
    if tag == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + tag: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load(path=TEMPLATE):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def resources(template, type_=None):
    return {k: v for k, v in template["Resources"].items() if type_ is None or v["Type"] == type_}


def branches(value):
    """Both branches of Fn::If (dropping AWS::NoValue); a list's items; else [value]."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, yes, no = value["Fn::If"]
        return [b for v in (yes, no) for b in branches(v)]
    if value == {"Ref": "AWS::NoValue"}:
        return []
    if isinstance(value, list):
        return [b for v in value for b in branches(v)]
    return [value]


def as_list(value):
    return value if isinstance(value, list) else [value]


def state_machine(template, name="JobStateMachine"):
    """(definition dict, DefinitionSubstitutions dict) of a SAM state machine."""
    props = template["Resources"][name]["Properties"]
    return props["Definition"], props.get("DefinitionSubstitutions", {})


PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def substitute(definition, values):
    """The definition as JSON text with ${Name} replaced, as CloudFormation does with
    DefinitionSubstitutions (text substitution inside the JSON document)."""
    text = json.dumps(definition)
    missing = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise KeyError(f"no substitution for {missing}")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


class _NoManagedPolicies:
    """samtranslator asks IAM for managed policy names only for SAM `Policies:`; the
    template sets explicit roles, so nothing is looked up (and nothing goes online)."""

    def load(self):
        return {}


def translate(path=TEMPLATE, defaults=None):
    """The template as plain CloudFormation (what CloudFormation runs after the SAM
    transform), with resource Metadata (checkov skips) passed through. `defaults`
    ({parameter: value}) replaces parameter defaults first: checkov evaluates Conditions
    with the defaults, so a resource behind an off-by-default switch (EventMode) is only
    scanned in a translation with the switch on."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    with open(path, encoding="utf-8") as f:
        sam = yaml_parse(f.read())
    for name, value in (defaults or {}).items():
        sam["Parameters"][name]["Default"] = value
    # `sam package` replaces local CodeUri paths with the uploaded artifact's S3 URI
    # before the transform runs; do the same with a placeholder.
    glob = sam.get("Globals", {}).get("Function", {})
    if "CodeUri" in glob and not str(glob["CodeUri"]).startswith("s3://"):
        glob["CodeUri"] = "s3://packaged-artifacts/code.zip"
    for name, res in sam["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::Serverless::Function" and "CodeUri" in props and not str(props["CodeUri"]).startswith("s3://"):
            props["CodeUri"] = f"s3://packaged-artifacts/{name}.zip"
    return transform(sam, {}, _NoManagedPolicies(), passthrough_metadata=True)


def condition_off(template, name):
    """Whether a resource's Condition is false with the parameters' defaults, as checkov
    evaluates it (it then drops the resource). Only the `Fn::Equals [Ref P, literal]` form
    is decided; any other condition counts as on, so its policies must be checked."""
    if name is None:
        return False
    cond = template.get("Conditions", {}).get(name, {})
    args = cond.get("Fn::Equals") if isinstance(cond, dict) else None
    if not (isinstance(args, list) and len(args) == 2 and isinstance(args[0], dict) and "Ref" in args[0]):
        return False
    param = template.get("Parameters", {}).get(args[0]["Ref"])
    return param is not None and str(param.get("Default")) != str(args[1])


IAM_CHECKS = ("CKV_AWS_107", "CKV_AWS_108", "CKV_AWS_109", "CKV_AWS_110", "CKV_AWS_111")


def checkov_report(report_path, translated_path):
    """Prints checkov's counts; returns 1 on a failed check, a parsing error, or an IAM
    role/policy that checkov's IAM checks skipped (it skips documents it cannot read,
    for example a statement wrapped in Fn::If)."""
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    if isinstance(report, list):  # one entry per framework
        report = next(r for r in report if r.get("check_type") == "cloudformation")
    with open(translated_path, encoding="utf-8") as f:
        translated = json.load(f)
    summary, results = report["summary"], report["results"]
    bad = 0
    for r in results["failed_checks"]:
        print(f"FAILED {r['check_id']} {r['resource']}: {r['check_name']}")
        bad += 1
    for r in results["skipped_checks"]:
        print(f"skipped {r['check_id']} {r['resource']}: {(r.get('check_result') or {}).get('suppress_comment', '')}")
    if summary.get("parsing_errors"):
        print(f"parsing errors: {summary['parsing_errors']}")
        bad += 1
    iam = {
        f"{v['Type']}.{k}"
        for k, v in translated["Resources"].items()
        if v["Type"] in ("AWS::IAM::Role", "AWS::IAM::Policy") and not condition_off(translated, v.get("Condition"))
    }
    for check in IAM_CHECKS:
        seen = {r["resource"] for r in results["passed_checks"] + results["failed_checks"] if r["check_id"] == check}
        for missing in sorted(iam - seen):
            print(f"NOT CHECKED {check} {missing}: checkov could not evaluate this policy")
            bad += 1
    print(f"checkov {summary.get('checkov_version')}: {summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped (each justified in Metadata.CheckovSkips), {len(iam)} IAM policies checked")
    return 1 if bad else 0


def main(argv):
    if len(argv) == 4 and argv[1] == "checkov-report":
        return checkov_report(argv[2], argv[3])
    if len(argv) >= 4 and argv[1] == "translate":
        # translate TEMPLATE OUT [Parameter=default ...]
        out = translate(argv[2], dict(a.split("=", 1) for a in argv[4:]))
        with open(argv[3], "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, sort_keys=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
