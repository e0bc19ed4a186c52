//! zot's access-control policy as a pure function of (identity, action,
//! repository).
//!
//! Among the repository patterns that match, the longest (by bytes) decides
//! alone; on a tie the lexicographically smallest wins, so the result never
//! depends on map order. Within it a grant comes from, in order: a policy
//! naming the user, a policy naming one of their groups, `defaultPolicy` for
//! any authenticated caller, `anonymousPolicy` for an anonymous one. If none
//! grants, `adminPolicy` decides. An API key's scopes, when it has any, then
//! restrict what the policy granted.

use crate::glob::{Glob, GlobError};
use std::collections::BTreeMap;
use std::fmt;

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Create, Action::Update, Action::Delete];

    pub fn parse(s: &str) -> Option<Action> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Some(Action::Read),
            "create" => Some(Action::Create),
            "update" => Some(Action::Update),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub fn all() -> Actions {
        Actions(0b1111)
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses action names as a configuration writes them: exactly `read`,
    /// `create`, `update` or `delete` (zot compares them case-sensitively,
    /// so `"Read"` grants nothing there; here it is refused).
    pub fn parse_config<S: AsRef<str>>(names: &[S]) -> Result<Actions, String> {
        let mut set = 0;
        for n in names {
            let n = n.as_ref();
            let a = Action::ALL
                .into_iter()
                .find(|a| a.as_str() == n)
                .ok_or_else(|| {
                    format!("unknown action {n:?} (actions are read, create, update, delete, in lower case)")
                })?;
            set |= a.bit();
        }
        Ok(Actions(set))
    }

    /// Parses action names; an unknown name is an error naming it.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Actions, String> {
        let mut set = 0;
        for n in names {
            let a = Action::parse(n.as_ref())
                .ok_or_else(|| format!("unknown action {:?}", n.as_ref()))?;
            set |= a.bit();
        }
        Ok(Actions(set))
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Anonymous,
    Htpasswd,
    ApiKey,
    Session,
    ClientCertificate,
}

/// A scope of an API key: a repository pattern and the actions allowed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub repositories: Glob,
    pub actions: Actions,
}

impl Scope {
    /// `repository:<pattern>:<action>[,<action>...]`, or without the
    /// `repository:` prefix.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let body = s.strip_prefix("repository:").unwrap_or(s);
        let (pattern, actions) = body
            .rsplit_once(':')
            .ok_or_else(|| format!("scope {s:?} is not repository:<pattern>:<actions>"))?;
        let actions: Vec<&str> = actions.split(',').collect();
        let actions = Actions::parse(&actions).map_err(|e| format!("scope {s:?}: {e}"))?;
        if actions.is_empty() {
            return Err(format!("scope {s:?} names no action"));
        }
        let repositories = Glob::new(pattern).map_err(|e| format!("scope {s:?}: {e}"))?;
        Ok(Scope {
            repositories,
            actions,
        })
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `None` for an anonymous caller.
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub method: Method,
    /// For API keys with scopes: the only things the key may do.
    pub scopes: Option<Vec<Scope>>,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            user: None,
            groups: Vec::new(),
            method: Method::Anonymous,
            scopes: None,
        }
    }

    pub fn user(name: &str, groups: Vec<String>, method: Method) -> Identity {
        Identity {
            user: Some(name.to_owned()),
            groups,
            method,
            scopes: None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.user.is_none()
    }
}

/// A `policies[]` entry or the admin policy.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub actions: Actions,
}

impl Rule {
    fn names_user(&self, who: &Identity) -> bool {
        who.user
            .as_ref()
            .is_some_and(|u| self.users.iter().any(|x| x == u))
    }

    fn names_group(&self, who: &Identity) -> bool {
        who.groups.iter().any(|g| self.groups.contains(g))
    }
}

/// The rules of one repository pattern.
#[derive(Debug, Clone)]
pub struct RepoRules {
    pub pattern: Glob,
    pub policies: Vec<Rule>,
    pub default: Actions,
    pub anonymous: Actions,
}

/// The outcome of a decision, with the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// The whole access-control configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Sorted so that the first match is the winner.
    repos: Vec<RepoRules>,
    admin: Option<Rule>,
    /// user -> groups, from `accessControl.groups`.
    static_groups: BTreeMap<String, Vec<String>>,
    /// `accessControl.metrics.users` (`""` means anonymous).
    metrics_users: Vec<String>,
    metrics_anonymous: bool,
    /// No `accessControl` at all: every authenticated caller may do all...
    open: bool,
    /// ...and, when no authentication is configured either, so may anyone.
    anonymous_too: bool,
}

/// The input of [`Policy::new`]: zot's `accessControl`, as written.
#[derive(Debug, Clone, Default)]
pub struct PolicySpec {
    pub repositories: Vec<RepoSpec>,
    pub admin: Option<RuleSpec>,
    /// `accessControl.groups`: group name and its users.
    pub groups: Vec<(String, Vec<String>)>,
    pub metrics_users: Vec<String>,
    pub metrics_anonymous: Vec<String>,
}

/// One `accessControl.repositories` entry.
#[derive(Debug, Clone, Default)]
pub struct RepoSpec {
    pub pattern: String,
    pub policies: Vec<RuleSpec>,
    pub default_policy: Vec<String>,
    pub anonymous_policy: Vec<String>,
}

/// A `policies[]` entry or `adminPolicy`.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub actions: Vec<String>,
}

/// Why a policy configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Glob(#[from] GlobError),
    /// An action list that names an unknown action; `at` is where, in
    /// `accessControl`'s terms (`repositories."**".defaultPolicy`).
    #[error("{at}: {message}")]
    Actions { at: String, message: String },
}

impl PolicyError {
    /// Where in `accessControl` the error is, if it is an action list.
    pub fn location(&self) -> Option<&str> {
        match self {
            PolicyError::Actions { at, .. } => Some(at),
            PolicyError::Glob(_) => None,
        }
    }
}

fn actions<S: AsRef<str>>(
    names: &[S],
    at: impl FnOnce() -> String,
) -> Result<Actions, PolicyError> {
    Actions::parse_config(names).map_err(|message| PolicyError::Actions { at: at(), message })
}

fn rule(r: &RuleSpec, at: impl FnOnce() -> String) -> Result<Rule, PolicyError> {
    Ok(Rule {
        users: r.users.clone(),
        groups: r.groups.clone(),
        actions: actions(&r.actions, || format!("{}.actions", at()))?,
    })
}

impl Policy {
    /// A policy that lets every caller do everything (no authentication).
    pub fn open() -> Policy {
        Policy {
            open: true,
            anonymous_too: true,
            metrics_anonymous: true,
            ..Policy::default()
        }
    }

    /// Authentication without `accessControl`: any authenticated caller may
    /// do everything, anonymous callers nothing.
    pub fn authenticated_only() -> Policy {
        Policy {
            open: true,
            anonymous_too: false,
            ..Policy::default()
        }
    }

    pub fn new(spec: &PolicySpec) -> Result<Policy, PolicyError> {
        let mut repos = Vec::new();
        for r in &spec.repositories {
            let at = format!("repositories[{:?}]", r.pattern);
            repos.push(RepoRules {
                pattern: Glob::new(&r.pattern)?,
                policies: r
                    .policies
                    .iter()
                    .enumerate()
                    .map(|(i, p)| rule(p, || format!("{at}.policies[{i}]")))
                    .collect::<Result<_, _>>()?,
                default: actions(&r.default_policy, || format!("{at}.defaultPolicy"))?,
                anonymous: actions(&r.anonymous_policy, || format!("{at}.anonymousPolicy"))?,
            });
        }
        repos.sort_by(|a, b| {
            let (a, b) = (a.pattern.as_str(), b.pattern.as_str());
            b.len().cmp(&a.len()).then_with(|| a.cmp(b))
        });
        let mut static_groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (group, users) in &spec.groups {
            for u in users {
                static_groups
                    .entry(u.clone())
                    .or_default()
                    .push(group.clone());
            }
        }
        Ok(Policy {
            repos,
            admin: spec
                .admin
                .as_ref()
                .map(|r| rule(r, || "adminPolicy".into()))
                .transpose()?,
            static_groups,
            metrics_users: spec.metrics_users.clone(),
            metrics_anonymous: actions(&spec.metrics_anonymous, || {
                "metrics.anonymousPolicy".into()
            })?
            .contains(Action::Read),
            open: false,
            anonymous_too: false,
        })
    }

    /// Groups `accessControl.groups` gives a user.
    pub fn static_groups(&self, user: &str) -> Vec<String> {
        self.static_groups.get(user).cloned().unwrap_or_default()
    }

    /// Whether some repository grants anonymous callers less than everything,
    /// i.e. some request needs credentials.
    pub fn needs_credentials(&self) -> bool {
        if self.open {
            return !self.anonymous_too;
        }
        let everything_anonymous = self
            .repos
            .iter()
            .any(|r| r.pattern.as_str() == "**" && r.anonymous == Actions::all());
        !everything_anonymous || self.repos.iter().any(|r| r.anonymous != Actions::all())
    }

    /// The decision for one action on one repository.
    pub fn decide(&self, who: &Identity, action: Action, repo: &str) -> Decision {
        let d = self.decide_policy(who, action, repo);
        if !d.allowed {
            return d;
        }
        match &who.scopes {
            // A scoped key may do only what a scope allows; an empty list
            // (its scopes no longer parse) allows nothing.
            Some(scopes) => {
                let ok = scopes
                    .iter()
                    .any(|s| s.actions.contains(action) && s.repositories.matches(repo));
                if ok {
                    d
                } else {
                    Decision {
                        allowed: false,
                        reason: format!("the API key's scopes do not allow {action} on {repo}"),
                    }
                }
            }
            None => d,
        }
    }

    fn decide_policy(&self, who: &Identity, action: Action, repo: &str) -> Decision {
        let grant = |reason: String| Decision {
            allowed: true,
            reason,
        };
        if self.open {
            if who.is_anonymous() && !self.anonymous_too {
                return Decision {
                    allowed: false,
                    reason: "authentication is required (no accessControl)".into(),
                };
            }
            return grant("no accessControl: everything is allowed".into());
        }
        let winner = self.repos.iter().find(|r| r.pattern.matches(repo));
        if let Some(r) = winner {
            let p = r.pattern.as_str();
            if let Some(i) = r
                .policies
                .iter()
                .position(|x| x.names_user(who) && x.actions.contains(action))
            {
                return grant(format!("repositories[{p:?}].policies[{i}] names the user"));
            }
            if let Some(i) = r
                .policies
                .iter()
                .position(|x| x.names_group(who) && x.actions.contains(action))
            {
                return grant(format!(
                    "repositories[{p:?}].policies[{i}] names one of the user's groups"
                ));
            }
            if !who.is_anonymous() && r.default.contains(action) {
                return grant(format!("repositories[{p:?}].defaultPolicy"));
            }
            if who.is_anonymous() && r.anonymous.contains(action) {
                return grant(format!("repositories[{p:?}].anonymousPolicy"));
            }
        }
        if let Some(admin) = &self.admin {
            if (admin.names_user(who) || admin.names_group(who)) && admin.actions.contains(action) {
                return grant("adminPolicy".into());
            }
        }
        let reason = match winner {
            Some(r) => format!("repositories[{:?}] (the longest matching pattern) grants nothing for {action}, nor does adminPolicy", r.pattern.as_str()),
            None => format!("no repository pattern matches {repo:?} and adminPolicy does not grant {action}"),
        };
        Decision {
            allowed: false,
            reason,
        }
    }

    /// Whether the caller may read `/metrics`.
    pub fn metrics_allowed(&self, who: &Identity) -> bool {
        // A key with scopes may do what they name, and reading metrics (the
        // names and traffic of every repository) is none of it: such a key
        // reads them only where anyone may.
        if who.scopes.is_some() {
            return self.metrics_allowed(&Identity::anonymous());
        }
        if self.open {
            return self.anonymous_too || !who.is_anonymous();
        }
        match &who.user {
            // zot 2.1.0 read `users: [""]` as "anonymous may scrape"; so does Berth.
            None => self.metrics_anonymous || self.metrics_users.iter().any(|u| u.is_empty()),
            Some(u) => self.metrics_users.iter().any(|x| x == u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|x| x.to_string()).collect()
    }

    fn repo(
        pattern: &str,
        policies: Vec<RuleSpec>,
        default: &[&str],
        anonymous: &[&str],
    ) -> RepoSpec {
        RepoSpec {
            pattern: pattern.into(),
            policies,
            default_policy: s(default),
            anonymous_policy: s(anonymous),
        }
    }

    fn rule(users: &[&str], groups: &[&str], actions: &[&str]) -> RuleSpec {
        RuleSpec {
            users: s(users),
            groups: s(groups),
            actions: s(actions),
        }
    }

    /// The seed deployment: anyone reads, CI creates, admins do anything.
    fn seed() -> Policy {
        let all = ["read", "create", "update", "delete"];
        Policy::new(&PolicySpec {
            repositories: vec![
                repo(
                    "**",
                    vec![rule(&[], &["artifact-workloads"], &["read", "create"])],
                    &[],
                    &["read"],
                ),
                repo("private/**", vec![rule(&["alice"], &[], &all)], &[], &[]),
                repo("private/open-*", vec![], &["read"], &[]),
            ],
            admin: Some(rule(&[], &["admins"], &all)),
            groups: vec![("admins".into(), s(&["root"]))],
            metrics_users: s(&[""]),
            metrics_anonymous: vec![],
        })
        .unwrap()
    }

    #[test]
    fn seed_semantics() {
        let p = seed();
        let anon = Identity::anonymous();
        let ci = Identity::user("ci", s(&["artifact-workloads"]), Method::ApiKey);
        let root = Identity::user("root", p.static_groups("root"), Method::Htpasswd);
        let bob = Identity::user("bob", vec![], Method::Htpasswd);
        assert!(p.decide(&anon, Action::Read, "app/web").allowed);
        assert!(!p.decide(&anon, Action::Create, "app/web").allowed);
        assert!(p.decide(&ci, Action::Create, "app/web").allowed);
        assert!(
            !p.decide(&ci, Action::Update, "app/web").allowed,
            "tags are immutable for CI"
        );
        assert!(!p.decide(&ci, Action::Delete, "app/web").allowed);
        assert!(p.decide(&root, Action::Update, "app/web").allowed);
        assert_eq!(
            p.decide(&root, Action::Delete, "app/web").reason,
            "adminPolicy"
        );
        // Authenticated users do not inherit anonymousPolicy (zot's rule).
        assert!(!p.decide(&bob, Action::Read, "app/web").allowed);
        // The longest pattern decides alone.
        assert!(!p.decide(&anon, Action::Read, "private/x").allowed);
        assert!(!p.decide(&ci, Action::Create, "private/x").allowed);
        assert!(
            p.decide(
                &Identity::user("alice", vec![], Method::Session),
                Action::Delete,
                "private/x"
            )
            .allowed
        );
        assert!(p.decide(&bob, Action::Read, "private/open-data").allowed);
        // defaultPolicy is for any authenticated caller, alice included, and
        // the longer pattern hides her private/** rights.
        let alice = Identity::user("alice", vec![], Method::Session);
        assert!(p.decide(&alice, Action::Read, "private/open-data").allowed);
        assert!(
            !p.decide(&alice, Action::Delete, "private/open-data")
                .allowed
        );
        assert!(p.decide(&root, Action::Read, "private/x").allowed);
        assert!(p.needs_credentials());
        assert!(p.metrics_allowed(&anon));
        assert!(!p.metrics_allowed(&bob));
    }

    #[test]
    fn a_scoped_key_reads_metrics_only_where_anyone_may() {
        let mut spec = PolicySpec {
            repositories: vec![repo("**", vec![], &["read"], &[])],
            metrics_users: s(&["root"]),
            ..PolicySpec::default()
        };
        let p = Policy::new(&spec).unwrap();
        let mut key = Identity::user("root", vec![], Method::ApiKey);
        assert!(p.metrics_allowed(&key));
        key.scopes = Some(vec![Scope::parse("repository:public/**:read").unwrap()]);
        assert!(!p.metrics_allowed(&key));
        spec.metrics_users = s(&["root", ""]);
        assert!(Policy::new(&spec).unwrap().metrics_allowed(&key));
    }

    #[test]
    fn action_names_are_exact_and_located() {
        let spec = |default: &[&str], admin: &[&str]| PolicySpec {
            repositories: vec![repo(
                "**",
                vec![rule(&["alice"], &[], &["read"])],
                default,
                &[],
            )],
            admin: Some(rule(&["root"], &[], admin)),
            ..PolicySpec::default()
        };
        assert!(Policy::new(&spec(&["read", "create"], &["delete"])).is_ok());
        // zot compares action names case-sensitively: "Read" grants nothing
        // there, so it is refused here rather than granted.
        let e = Policy::new(&spec(&["Read"], &[])).unwrap_err();
        assert_eq!(e.location(), Some("repositories[\"**\"].defaultPolicy"));
        assert!(e.to_string().contains("\"Read\""), "{e}");
        let e = Policy::new(&spec(&[], &["pull"])).unwrap_err();
        assert_eq!(e.location(), Some("adminPolicy.actions"));
        let mut s = spec(&[], &[]);
        s.repositories[0].policies[0].actions = vec![" read".into()];
        let e = Policy::new(&s).unwrap_err();
        assert_eq!(
            e.location(),
            Some("repositories[\"**\"].policies[0].actions")
        );
        let mut s = spec(&[], &[]);
        s.metrics_anonymous = vec!["READ".into()];
        let e = Policy::new(&s).unwrap_err();
        assert_eq!(e.location(), Some("metrics.anonymousPolicy"));
    }

    #[test]
    fn scopes_restrict_keys() {
        let p = seed();
        let mut key = Identity::user("root", p.static_groups("root"), Method::ApiKey);
        key.scopes = Some(vec![Scope::parse("repository:ci/**:read,create").unwrap()]);
        assert!(p.decide(&key, Action::Create, "ci/app").allowed);
        assert!(!p.decide(&key, Action::Delete, "ci/app").allowed);
        assert!(!p.decide(&key, Action::Read, "other").allowed);
        assert!(Scope::parse("ci/**:read").is_ok());
        for bad in ["nothing", "a:fly", "[x]:read", "a:"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ties_and_no_match_are_deterministic() {
        let p = Policy::new(&PolicySpec {
            repositories: vec![
                repo("a/*", vec![], &[], &["read"]),
                repo("*/b", vec![], &[], &[]),
            ],
            ..PolicySpec::default()
        })
        .unwrap();
        // Same length: "*/b" < "a/*" lexicographically, so "*/b" decides.
        assert!(
            !p.decide(&Identity::anonymous(), Action::Read, "a/b")
                .allowed
        );
        assert!(
            p.decide(&Identity::anonymous(), Action::Read, "a/c")
                .allowed
        );
        let d = p.decide(&Identity::anonymous(), Action::Read, "z");
        assert!(!d.allowed);
        assert!(d.reason.contains("no repository pattern"));
        let bad = PolicySpec {
            repositories: vec![repo("**", vec![], &["fly"], &[])],
            ..Default::default()
        };
        assert!(Policy::new(&bad).is_err());
        assert!(
            Policy::open()
                .decide(&Identity::anonymous(), Action::Delete, "x")
                .allowed
        );
        let authn = Policy::authenticated_only();
        assert!(
            !authn
                .decide(&Identity::anonymous(), Action::Read, "x")
                .allowed
        );
        assert!(
            authn
                .decide(
                    &Identity::user("u", vec![], Method::Htpasswd),
                    Action::Delete,
                    "x"
                )
                .allowed
        );
        assert!(authn.needs_credentials());
    }

    /// Every action x kind of identity x shape of policy: the expected
    /// answers written out as a table (R C U D).
    #[test]
    fn decision_table() {
        let all = ["read", "create", "update", "delete"];
        let shapes: Vec<(&str, Policy)> = vec![
            (
                "anonymous read only",
                Policy::new(&PolicySpec {
                    repositories: vec![repo("**", vec![], &[], &["read"])],
                    ..Default::default()
                })
                .unwrap(),
            ),
            (
                "default read+create",
                Policy::new(&PolicySpec {
                    repositories: vec![repo("**", vec![], &["read", "create"], &[])],
                    ..Default::default()
                })
                .unwrap(),
            ),
            (
                "user policy",
                Policy::new(&PolicySpec {
                    repositories: vec![repo("**", vec![rule(&["u"], &[], &all)], &[], &[])],
                    ..Default::default()
                })
                .unwrap(),
            ),
            (
                "group policy",
                Policy::new(&PolicySpec {
                    repositories: vec![repo(
                        "**",
                        vec![rule(&[], &["g"], &["read", "create"])],
                        &[],
                        &[],
                    )],
                    ..Default::default()
                })
                .unwrap(),
            ),
            (
                "admin only",
                Policy::new(&PolicySpec {
                    admin: Some(rule(&[], &["admins"], &all)),
                    ..Default::default()
                })
                .unwrap(),
            ),
        ];
        let anon = Identity::anonymous();
        let user = Identity::user("u", vec![], Method::Htpasswd);
        let member = Identity::user("m", vec!["g".into()], Method::Session);
        let admin = Identity::user("a", vec!["admins".into()], Method::Htpasswd);
        let mut scoped = Identity::user("u", vec![], Method::ApiKey);
        scoped.scopes = Some(vec![Scope::parse("repository:x/**:read").unwrap()]);
        let who: [(&str, &Identity); 5] = [
            ("anonymous", &anon),
            ("user u", &user),
            ("group member", &member),
            ("admin", &admin),
            ("u's scoped key", &scoped),
        ];
        // Rows: shape; columns: identity; each cell R C U D.
        let expected = [
            ["R---", "----", "----", "----", "----"],
            ["----", "RC--", "RC--", "RC--", "R---"],
            ["----", "RCUD", "----", "----", "R---"],
            ["----", "----", "RC--", "----", "----"],
            ["----", "----", "----", "RCUD", "----"],
        ];
        for (row, (shape, policy)) in shapes.iter().enumerate() {
            for (col, (name, id)) in who.iter().enumerate() {
                let got: String = Action::ALL
                    .iter()
                    .zip(["R", "C", "U", "D"])
                    .map(|(a, l)| {
                        if policy.decide(id, *a, "x/repo").allowed {
                            l
                        } else {
                            "-"
                        }
                    })
                    .collect();
                assert_eq!(got, expected[row][col], "{shape} / {name}");
            }
        }
    }
}
