//! The `active-directory` preset against a real AD-compatible server: a Samba AD DC
//! from Debian's packages, provisioned into a temporary directory.
//!
//! Samba's LDAP port cannot be moved off 389, so the DC and the dirsync binary run
//! together in a private network namespace (`unshare -n`, loopback only), which
//! needs root, as installing the test packages does. What this proves beyond the
//! unit tests on recorded entries: objectGUIDs rendered exactly as Samba renders
//! them, userAccountControl and userPrincipalName read, paging, nested groups and a
//! cycle, and a search from the domain root that only works because the preset
//! sends the domain scope control (without it the DC refers to its Configuration
//! partition, and the read fails with a clear referral error).
//!
//! Samba returns large `member` attributes whole, so ranged retrieval is covered by
//! the unit tests in `src/source/ldap/build.rs`, not here.

mod common;

use std::path::Path;
use std::process::Command;

use common::samba::{STAFF, provision, run};

fn config(dir: &Path, domain_scope: bool) -> String {
    format!(
        r#"
state_db = "state.db"

[source]
kind = "ldap"
preset = "active-directory"
url = "ldap://127.0.0.1"
base_dn = "DC=corp,DC=example,DC=com"
bind_dn = "Administrator@corp.example.com"
bind_password_file = "{dir}/admin.pw"
page_size = 2
domain_scope = {domain_scope}

[source.users]
base_dn = "{STAFF}"

[targets.office]
preset = "onlyoffice-group-members"
base_url = "http://127.0.0.1:9"
[targets.office.auth]
value_file = "{dir}/admin.pw"

[[targets.office.groups.rules]]
match = "^(Engineering|Platform|SRE|Ring A|Ring B)$"
target_id = "{{{{ group.id }}}}"

# Members show who they are: id, UPN, enabled.
[targets.office.users]
id_template = "{{{{ user.id }}}}/{{{{ user.attrs.userPrincipalName }}}}/{{% if user.enabled %}}enabled{{% else %}}disabled{{% endif %}}"
"#,
        dir = dir.display()
    )
}

#[test]
fn active_directory_preset_against_a_samba_ad_dc() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let guids = provision(dir);
    std::fs::write(dir.join("scoped.toml"), config(dir, true)).expect("write config");
    std::fs::write(dir.join("unscoped.toml"), config(dir, false)).expect("write config");

    // Inside the namespace: start the DC, wait for its port (up to 2 minutes: a loaded
    // machine starts it slowly), run dirsync three ways.
    let script = format!(
        r#"set -u
ip link set lo up
samba -i -M single -s {dir}/dc/etc/smb.conf > {dir}/samba.out 2>&1 &
pid=$!
for i in $(seq 2400); do (echo > /dev/tcp/127.0.0.1/389) 2>/dev/null && break; sleep 0.05; done
for run in "scoped check" "scoped sync --dry-run" "unscoped check"; do
  set -- $run
  name=$(echo "$run" | tr ' ' '_')
  "$DIRSYNC" --config {dir}/$1.toml "${{@:2}}" > {dir}/$name.out 2> {dir}/$name.err
  echo $? > {dir}/$name.rc
done
kill $pid
wait $pid
true
"#,
        dir = dir.display()
    );
    std::fs::write(dir.join("run.sh"), script).expect("write script");
    run(Command::new("unshare")
        .args(["-n", "bash"])
        .arg(dir.join("run.sh"))
        .env("DIRSYNC", env!("CARGO_BIN_EXE_dirsync"))
        .env("RUST_LOG", "info"));
    let read = |name: &str| {
        let get = |ext: &str| std::fs::read_to_string(dir.join(format!("{name}.{ext}"))).unwrap_or_default();
        (get("rc").trim().to_owned(), get("out"), get("err"))
    };

    let (rc, out, err) = read("scoped_check");
    assert_eq!(rc, "0", "{out}\n{err}");
    assert!(out.contains("bound as Administrator@corp.example.com"), "{out}");
    assert!(out.contains("source: 5 users,"), "{out}");
    assert!(
        out.contains("nested groups contain each other: Ring A ⊃ Ring B"),
        "{out}"
    );

    let (rc, out, err) = read("scoped_sync_--dry-run");
    assert_eq!(rc, "0", "{out}\n{err}");
    let member = |name: &str, state: &str| format!("{}/{name}@corp.example.com/{state}", guids[name]);
    let group = |name: &str, cn: &str, members: &[String]| {
        let mut members = members.to_vec();
        members.sort();
        format!(
            "replace members of group {cn:?} ({}): {} member(s), +{} -0 [New]\n      + {}",
            guids[name],
            members.len(),
            members.len(),
            members.join(", ")
        )
    };
    let alice = member("alice", "enabled");
    let bob = member("bob", "disabled");
    let carol = member("carol", "enabled");
    let dave = member("dave", "enabled");
    let erin = member("erin", "enabled");
    for want in [
        group("sre", "SRE", &[dave.clone(), bob.clone()]),
        group(
            "platform",
            "Platform",
            &[carol.clone(), dave.clone(), bob.clone()],
        ),
        group("engineering", "Engineering", &[alice, carol, dave, bob]),
        group("ring-a", "Ring A", std::slice::from_ref(&erin)),
        group("ring-b", "Ring B", &[erin]),
    ] {
        assert!(out.contains(&want), "missing:\n{want}\nin:\n{out}");
    }

    // Without the domain scope control the DC refers to its Configuration partition:
    // the read stops instead of quietly skipping part of the tree.
    let (rc, out, err) = read("unscoped_check");
    assert_eq!(rc, "6", "{out}\n{err}");
    assert!(err.contains("returned a referral to ldap://"), "{err}");
    assert!(
        err.contains("CN=Configuration,DC=corp,DC=example,DC=com"),
        "{err}"
    );
    assert!(err.contains("`domain_scope = true`"), "{err}");
}
