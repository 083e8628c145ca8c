//! The README cannot rot: every command in its ```sh blocks is checked here
//! without running anything.
//!
//! - `rally …` (and `cargo run … -- …`) lines must parse with the binary's own
//!   command line, [`rally::cli::Cli`], so a renamed or removed flag fails here
//!   with clap's message and the README line.
//! - `make …` lines must name targets the Makefile defines.
//! - Any other program must be in [`EXTERNAL`], a short list of standard tools
//!   the README uses to prepare a split deployment; a new one fails until
//!   someone decides how it is checked.
//!
//! The first ```sh block must be the quick start: `make run`, then `make test`.
//! No server is started; the commands themselves run in `tests/up.rs`,
//! `tests/cli.rs` and CI (`make test`).

use clap::Parser as _;
use rally::cli::Cli;

const README: &str = include_str!("../README.md");
const MAKEFILE: &str = include_str!("../Makefile");

/// Programs the README may run besides `rally`, `cargo` and `make`, with the
/// reason each is not checked here.
const EXTERNAL: &[(&str, &str)] = &[
    ("createdb", "PostgreSQL's client: creates the split deployment's database"),
    ("openssl", "generates the split deployment's secrets"),
    ("docker", "no Docker engine runs here: `make deploy-check` lints the Dockerfile and validates compose"),
];

/// One command of a ```sh block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShCommand {
    /// 1-based line in the README where the command starts.
    line: usize,
    /// The command as written (continuation lines joined).
    text: String,
}

impl ShCommand {
    /// The program it runs: its first word.
    fn program(&self) -> &str {
        self.text.split_whitespace().next().unwrap_or_default()
    }

    /// Its words, split like a shell would (see [`split_words`]).
    fn words(&self) -> Result<Vec<String>, String> {
        split_words(&self.text).map_err(|err| format!("README.md:{}: `{}`: {err}", self.line, self.text))
    }
}

/// Splits one shell command line into words: single and double quotes,
/// backslash escapes, and a `#` that starts a word begins a comment.
/// Unquoted control operators and redirections (`|`, `;`, `&`, `<`, `>`),
/// command substitution and backticks are refused: a checked command must be
/// a plain argument list.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".to_owned()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".to_owned()),
                        },
                        Some('`') => return Err("command substitution (`…`) in a checked command".to_owned()),
                        Some('$') if chars.peek() == Some(&'(') => {
                            return Err("command substitution ($(…)) in a checked command".to_owned());
                        }
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".to_owned()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("a trailing backslash outside a continuation".to_owned()),
                }
            }
            '|' | ';' | '&' | '<' | '>' | '`' => {
                return Err(format!("unquoted shell operator {c:?}: keep checked commands to one plain command"));
            }
            '$' if chars.peek() == Some(&'(') => {
                return Err("command substitution ($(…)) in a checked command".to_owned());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The commands of every ```sh block, in order, grouped by block. Blank
/// lines and comment lines are skipped; lines ending in `\` continue on the
/// next line. Fails on a fence in another shell dialect (it would escape this
/// test) and on an unclosed block.
fn sh_blocks(markdown: &str) -> Result<Vec<Vec<ShCommand>>, String> {
    enum Fence {
        Outside,
        Sh(Vec<ShCommand>),
        Other,
    }
    let mut blocks = Vec::new();
    let mut fence = Fence::Outside;
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in markdown.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match std::mem::replace(&mut fence, Fence::Outside) {
                Fence::Sh(block) => {
                    if pending.is_some() {
                        return Err(format!("README.md:{number}: the block ends inside a continued line"));
                    }
                    blocks.push(block);
                    Fence::Outside
                }
                Fence::Other => Fence::Outside,
                Fence::Outside => match info.trim() {
                    "sh" => Fence::Sh(Vec::new()),
                    "bash" | "shell" | "console" | "zsh" => {
                        return Err(format!("README.md:{number}: write ```sh, so tests/readme.rs checks the block"));
                    }
                    _ => Fence::Other,
                },
            };
            continue;
        }
        let Fence::Sh(block) = &mut fence else { continue };
        let (line, mut text) = pending.take().unwrap_or((number, String::new()));
        if text.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                text.push_str(head.trim_end());
                pending = Some((line, text));
            }
            None => {
                text.push_str(trimmed);
                block.push(ShCommand { line, text });
            }
        }
    }
    if !matches!(fence, Fence::Outside) {
        return Err("README.md: a code block is never closed".to_owned());
    }
    Ok(blocks)
}

/// Targets the Makefile defines (`name:` or `a b: …` at the start of a line).
fn make_targets(makefile: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in makefile.lines() {
        if line.starts_with([' ', '\t', '#']) {
            continue;
        }
        let Some((head, rest)) = line.split_once(':') else { continue };
        // `A := B` and `A ?= B` assign variables, not rules.
        if rest.starts_with('=') || head.contains('=') {
            continue;
        }
        targets.extend(
            head.split_whitespace().filter(|name| !name.starts_with('.') || *name == ".venv").map(str::to_owned),
        );
    }
    targets
}

/// The argv `rally` would get from a `cargo run … -- ARGS` line.
fn cargo_run_argv(words: &[String]) -> Option<Vec<String>> {
    if words.get(1).map(String::as_str) != Some("run") {
        return None;
    }
    let separator = words.iter().position(|word| word == "--")?;
    Some(std::iter::once("rally".to_owned()).chain(words[separator + 1..].iter().cloned()).collect())
}

/// Checks one command; the error names the line and says what is wrong.
fn check(command: &ShCommand, targets: &[String]) -> Result<(), String> {
    let at = format!("README.md:{}: `{}`", command.line, command.text);
    let program = command.program();
    if EXTERNAL.iter().any(|(name, _)| *name == program) {
        return Ok(());
    }
    let words = command.words()?;
    let argv = match program {
        "rally" => words,
        "cargo" => match cargo_run_argv(&words) {
            Some(argv) => argv,
            None => return Err(format!("{at}: only `cargo run … -- ARGS` lines are checked; use `rally …`")),
        },
        "make" => {
            let named: Vec<&String> =
                words[1..].iter().filter(|word| !word.starts_with('-') && !word.contains('=')).collect();
            if named.is_empty() {
                return Err(format!("{at}: name the make target"));
            }
            for target in named {
                if !targets.contains(target) {
                    return Err(format!("{at}: the Makefile has no target `{target}` (it has {targets:?})"));
                }
            }
            return Ok(());
        }
        // A script of the repository's own: it must exist (`make deploy-check` lints it).
        script if script.starts_with("deploy/") => {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
            return if path.is_file() { Ok(()) } else { Err(format!("{at}: there is no script {script}")) };
        }
        other => {
            return Err(format!(
                "{at}: tests/readme.rs does not know `{other}`; check it in a test, or add it to EXTERNAL with the reason"
            ));
        }
    };
    Cli::try_parse_from(&argv).map(drop).map_err(|err| format!("{at}\n{}", err.render()))
}

#[test]
fn every_readme_command_parses_and_every_make_target_exists() {
    let blocks = sh_blocks(README).unwrap_or_else(|err| panic!("{err}"));
    let targets = make_targets(MAKEFILE);
    let commands: Vec<&ShCommand> = blocks.iter().flatten().collect();
    let failures: Vec<String> = commands.iter().filter_map(|command| check(command, &targets).err()).collect();
    assert!(failures.is_empty(), "{} README commands are wrong:\n\n{}", failures.len(), failures.join("\n\n"));
    // The README documents every role; if none of its lines were found, the
    // extraction broke, not the README.
    let rally_roles: std::collections::BTreeSet<String> = commands
        .iter()
        .filter(|command| command.program() == "rally")
        .filter_map(|command| command.words().ok()?.get(1).cloned())
        .collect();
    for role in ["up", "play", "lobby", "matchmaker", "shard", "bot", "loadtest", "sim"] {
        assert!(rally_roles.contains(role), "the README shows no `rally {role}` command (found {rally_roles:?})");
    }
}

#[test]
fn the_quick_start_comes_first_and_is_make_run_then_make_test() {
    let blocks = sh_blocks(README).unwrap_or_else(|err| panic!("{err}"));
    let first: Vec<Vec<String>> = blocks
        .first()
        .expect("the README has a ```sh block")
        .iter()
        .map(|command| command.words().expect("plain commands"))
        .collect();
    assert_eq!(first, [vec!["make", "run"], vec!["make", "test"]]);
    let quick_start = README.find("## Quick start").expect("a Quick start section");
    let first_section = README.find("\n## ").expect("sections");
    assert_eq!(quick_start, first_section + 1, "Quick start is the first section");
}

#[test]
fn the_checks_catch_a_wrong_flag_a_missing_target_and_an_unknown_program() {
    let targets = make_targets(MAKEFILE);
    let command = |text: &str| {
        let blocks = sh_blocks(&format!("```sh\n{text}\n```\n")).expect("one block");
        blocks[0][0].clone()
    };
    let err = check(&command("rally up --no-such-flag 1"), &targets).expect_err("an unknown flag");
    assert!(err.contains("README.md:2") && err.contains("--no-such-flag"), "{err}");
    let err = check(&command("rally shard --tick-rate fast"), &targets).expect_err("a bad value");
    assert!(err.contains("fast"), "{err}");
    assert!(check(&command("cargo run --release -- sim --matches 10"), &targets).is_ok());
    assert!(check(&command("cargo run --release -- sim --matchez 10"), &targets).is_err());
    assert!(check(&command("deploy/check.sh"), &targets).is_ok(), "a script of the repository's");
    assert!(check(&command("deploy/no-such-script.sh"), &targets).is_err(), "a script that is not there");
    let err = check(&command("make deploy"), &targets).expect_err("no such target");
    assert!(err.contains("`deploy`"), "{err}");
    assert!(check(&command("make lint bench"), &targets).is_ok());
    assert!(check(&command("curl http://127.0.0.1:7109/metrics"), &targets).is_err());
    assert!(check(&command("openssl rand -hex 32 > jwt.key"), &targets).is_ok());
    let err = check(&command("rally up > up.log"), &targets).expect_err("a redirection");
    assert!(err.contains("operator"), "{err}");
}

#[test]
fn the_makefile_parser_finds_rules_and_skips_variables() {
    let targets = make_targets(MAKEFILE);
    for target in ["run", "test", "demo", "lint", "bench", "fmt", ".venv"] {
        assert!(targets.iter().any(|found| found == target), "{target} not in {targets:?}");
    }
    for variable in ["CARGO", "PYTHON", "VENV_PACKAGES", ".PHONY"] {
        assert!(!targets.iter().any(|found| found == variable), "{variable} taken for a target");
    }
}

#[test]
fn words_split_like_a_shell() {
    let split = |line: &str| split_words(line).expect(line);
    assert_eq!(split("rally up   --bots 2  # comment"), ["rally", "up", "--bots", "2"]);
    assert_eq!(
        split("rally loadtest connect --threshold 'rtt_p99<50ms'"),
        ["rally", "loadtest", "connect", "--threshold", "rtt_p99<50ms"]
    );
    assert_eq!(split(r#"a "b c" d\ e "\"q\"" x#y"#), ["a", "b c", "d e", "\"q\"", "x#y"]);
    assert_eq!(split(r#"rally shard --token-key "$TOKEN_KEY""#), ["rally", "shard", "--token-key", "$TOKEN_KEY"]);
    assert!(split("# only a comment").is_empty());
    assert!(split_words("rally up | tee log").is_err());
    assert!(split_words("rally up > log").is_err());
    assert!(split_words("rally play --lobby $(cat url)").is_err());
    assert!(split_words("rally up 'open").is_err());
}

#[test]
fn continued_lines_join_and_other_fences_are_skipped() {
    let markdown = "```rust\nrally nonsense\n```\ntext\n```sh\nrally sim \\\n  --matches 10\n```\n";
    let blocks = sh_blocks(markdown).expect("blocks");
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0][0].line, 6);
    assert_eq!(blocks[0][0].words().expect("words"), ["rally", "sim", "--matches", "10"]);
    let blocks = sh_blocks("```sh\n# a comment\n\nmake run # the main job\n```\n").expect("blocks");
    assert_eq!(blocks[0], [ShCommand { line: 4, text: "make run # the main job".to_owned() }]);
    assert!(sh_blocks("```bash\nrally up\n```\n").is_err());
    assert!(sh_blocks("```sh\nrally up\n").is_err());
}
