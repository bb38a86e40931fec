//! The shipped example policy set against its table, and the harness's
//! failure report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests report failure by panicking

use tenancy_authz::harness::{PolicySet, TestTable};

const SET: &str = include_str!("../example-policies/office.toml");
const TABLE: &str = include_str!("../example-policies/office.table.toml");

#[test]
fn the_example_table_passes() {
    let set = PolicySet::from_toml(SET).unwrap();
    let table = TestTable::from_toml(TABLE).unwrap();
    let report = set.run(&table).unwrap();
    assert!(report.is_success(), "{report}");
    assert_eq!(report.passed(), table.cases.len());
    assert!(report.passed() >= 20);
}

#[test]
fn json_forms_are_equivalent() {
    let set = PolicySet::from_toml(SET).unwrap();
    let table = TestTable::from_toml(TABLE).unwrap();
    let set_json = serde_json::to_string(&set).unwrap();
    let table_json = serde_json::to_string(&table).unwrap();
    let report = PolicySet::from_json(&set_json)
        .unwrap()
        .run(&TestTable::from_json(&table_json).unwrap())
        .unwrap();
    assert!(report.is_success(), "{report}");
}

#[test]
fn mismatches_come_with_their_explanation() {
    let set = PolicySet::from_toml(SET).unwrap();
    let table = TestTable::from_toml(
        r#"
[[case]]
name = "wrong on purpose"
principal = { id = "ann", roles = ["member"] }
action = "projects:delete"
resource = { type = "project" }
expect = "allow"

[[case]]
name = "right decision, wrong reason"
principal = { id = "ann", roles = ["member"] }
action = "projects:read"
resource = { type = "project" }
expect = "allow"
explain = "granted by policy"

[[case]]
name = "fine"
principal = { id = "ann", roles = ["member"] }
action = "projects:read"
resource = { type = "project" }
expect = "allow"
"#,
    )
    .unwrap();
    let report = set.run(&table).unwrap();
    assert_eq!(report.passed(), 1);
    let text = report.clone().into_result().unwrap_err().to_string();
    assert_eq!(
        text,
        "1 passed, 2 failed\n  \
         case \"wrong on purpose\": expected allow, got denied: nothing grants `projects:delete` on `project`\n  \
         case \"right decision, wrong reason\": expected allow explained as \"granted by policy\", got allowed: `projects:read` granted by role `member` (pattern `projects:read`)"
    );
}

#[test]
fn bad_files_say_where() {
    let err = TestTable::from_toml("[[case]]\nname = 1\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid test table TOML: TOML parse error at line 2"),
        "{err}"
    );
    let err = PolicySet::from_toml("permissions = [\"projects\"]")
        .unwrap()
        .compile()
        .unwrap_err();
    assert!(
        err.to_string().contains("must be `resource:action`"),
        "{err}"
    );
    let err = PolicySet::from_toml("permissions = [\"projects:read\"]\n[[roles]]\nname = \"x\"\npermissions = [\"projects:write\"]")
        .unwrap()
        .compile()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "role `x`: unknown permission `projects:write`: it is not in the permission catalog"
    );
}
