//! Every error keel-build reports instead of generating code that would not
//! compile or would silently lose something: the text a build script
//! prints, `path:line:column: message`, with the element and the fix.

use std::path::PathBuf;

use keel_build::{Builder, Error};

/// A fresh directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir()
            .join(format!("keel-build-errors-{}", std::process::id()))
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    /// Writes `t.proto` and returns its path.
    fn proto(&self, text: &str) -> PathBuf {
        self.write("t.proto", text)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write fixture");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn generate(builder: Builder, dir: &Scratch) -> Result<Vec<keel_build::GeneratedFile>, Error> {
    builder.generate(&["t.proto"], &[&dir.0])
}

/// The error's text, checked to be the same through `Display` and `Debug`.
fn text(err: &Error) -> String {
    let shown = err.to_string();
    assert_eq!(format!("{err:?}"), shown, "Debug and Display differ");
    shown
}

fn assert_starts(text: &str, prefix: &str) {
    assert!(
        text.starts_with(prefix),
        "expected `{prefix}...`, got:\n{text}"
    );
}

fn assert_has(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

const STREAMING: &str = "syntax = \"proto3\";\npackage t;\nmessage M {}\n\
service S {\n  rpc Get(M) returns (M);\n  rpc Watch(M) returns (stream M);\n\
  rpc Send(stream M) returns (M);\n  rpc Chat(stream M) returns (stream M);\n}\n";

#[test]
fn streaming_rpcs_of_every_kind_are_generated() {
    let dir = Scratch::new("streaming");
    dir.proto(STREAMING);
    let files = generate(Builder::new(), &dir).expect("streaming is generated");
    let code = &files[0].code;
    assert_has(
        code,
        &[
            "kind: ::keel::MethodKind::ServerStreaming",
            "kind: ::keel::MethodKind::ClientStreaming",
            "kind: ::keel::MethodKind::BidiStreaming",
            "pub async fn watch(",
            "pub async fn send(",
            "pub async fn chat(",
            "fn call_stream<'a>(",
            "fn get(",
        ],
    );
}

#[test]
fn a_proto2_extension_is_an_error_unless_skipped() {
    let dir = Scratch::new("extensions");
    let path = dir.proto(
        "syntax = \"proto2\";\npackage t;\nmessage Holder {\n  extensions 100 to 200;\n\
         extend Holder { optional int32 inner = 101; }\n}\n\
         extend Holder {\n  optional string outer = 100;\n}\n",
    );
    let err = generate(Builder::new(), &dir).expect_err("extension dropped");
    let Error::Unsupported { element, .. } = &err else {
        panic!("expected Unsupported, got {err}");
    };
    assert_eq!(element, "t.outer");
    let text = text(&err);
    assert_starts(&text, &format!("{}:8:19: ", path.display()));
    assert_has(
        &text,
        &[
            "extension `t.outer` of `t.Holder` would be dropped",
            "`.skip_unsupported(\"t.outer\")`",
        ],
    );

    let err = generate(Builder::new().skip_unsupported("t.outer"), &dir).expect_err("inner");
    assert_has(
        &text_of(&err),
        &["5:32: extension `t.Holder.inner` of `t.Holder`"],
    );
    generate(
        Builder::new()
            .skip_unsupported("t.outer")
            .skip_unsupported("t.Holder.inner"),
        &dir,
    )
    .expect("both skipped");
}

#[test]
fn custom_options_are_extensions_that_lose_nothing() {
    let dir = Scratch::new("options");
    dir.proto(
        "syntax = \"proto3\";\npackage t;\nimport \"google/protobuf/descriptor.proto\";\n\
         extend google.protobuf.FieldOptions { string label = 50001; }\n\
         message M { string name = 1 [(label) = \"x\"]; }\n",
    );
    generate(Builder::new(), &dir).expect("custom options pass");
}

#[test]
fn rpcs_named_like_client_methods_are_clashes() {
    let dir = Scratch::new("client-methods");
    for (rpc, method, what) in [
        ("New", "new", "it creates the client"),
        ("Options", "options", "it returns the call options"),
        ("WithOptions", "with_options", "call options"),
        ("FromClient", "from_client", "wraps a generic"),
        ("Client", "client", "returns the generic"),
        ("Clone", "clone", "`Clone::clone`"),
    ] {
        let path = dir.proto(&format!(
            "syntax = \"proto3\";\npackage t;\nmessage M {{}}\n\
             service Inventory {{\n  rpc Get(M) returns (M);\n  rpc {rpc}(M) returns (M);\n}}\n"
        ));
        let err = generate(Builder::new(), &dir).expect_err(rpc);
        let Error::Clash { element, .. } = &err else {
            panic!("expected Clash, got {err}");
        };
        assert_eq!(element, &format!("t.Inventory.{rpc}"));
        let text = text(&err);
        assert_starts(&text, &format!("{}:6:7: ", path.display()));
        assert_has(
            &text,
            &[
                &format!(
                    "rpc `t.Inventory.{rpc}` would be the client method `{method}`, \
                     which `InventoryClient` already has"
                ),
                what,
                "rename the rpc in the .proto",
                "`Builder::build_client(false)`",
                &format!("keel::Client::unary(&inventory::{}, ..)", rpc_static(rpc)),
            ],
        );
        // Without a client there is nothing to clash with.
        generate(Builder::new().build_client(false), &dir).expect("no client");
    }
}

fn rpc_static(rpc: &str) -> &'static str {
    match rpc {
        "New" => "NEW",
        "Options" => "OPTIONS",
        "WithOptions" => "WITH_OPTIONS",
        "FromClient" => "FROM_CLIENT",
        "Client" => "CLIENT",
        "Clone" => "CLONE",
        _ => unreachable!(),
    }
}

#[test]
fn rpcs_with_the_same_snake_case_name_are_a_clash() {
    let dir = Scratch::new("same-snake");
    let path = dir.proto(
        "syntax = \"proto3\";\npackage t;\nmessage M {}\n\
         service Inventory {\n  rpc GetItem(M) returns (M);\n  rpc get_item(M) returns (M);\n}\n",
    );
    let err = generate(Builder::new(), &dir).expect_err("same method");
    let text = text(&err);
    assert_starts(&text, &format!("{}:6:7: ", path.display()));
    assert_has(
        &text,
        &[
            "rpcs `GetItem` and `get_item` of service `t.Inventory` would both be the Rust \
             method `get_item`",
            "rename one of them in the .proto",
        ],
    );

    // Streaming rpcs get no method, but their descriptors clash all the same.
    dir.proto(
        "syntax = \"proto3\";\npackage t;\nmessage M {}\n\
         service Inventory {\n  rpc Service(M) returns (M);\n\
         rpc ServiceMethod(M) returns (stream M);\n}\n",
    );
    let err = generate(Builder::new().skip_all_unsupported(true), &dir).expect_err("statics");
    assert_has(
        &text_of(&err),
        &[
            "rpcs `Service` and `ServiceMethod` of service `t.Inventory` would both get the \
           descriptor `inventory::SERVICE_METHOD`",
        ],
    );
}

#[test]
fn messages_and_enums_named_like_generated_items_are_clashes() {
    let dir = Scratch::new("types");
    let service = "service Inventory {\n  rpc Get(M) returns (M);\n}\n";
    let cases = [
        (
            "message InventoryClient {}",
            "message `t.InventoryClient` and the client generated for service `t.Inventory` \
             would both be `InventoryClient` in the Rust module of package `t`",
            Some("`Builder::build_client(false)`"),
        ),
        (
            "message InventoryServer {}",
            "message `t.InventoryServer` and the server adapter generated for service \
             `t.Inventory` would both be `InventoryServer`",
            Some("`Builder::build_server(false)`"),
        ),
        (
            "enum inventory { A = 0; }",
            "enum `t.inventory` and the server trait generated for service `t.Inventory` would \
             both be `Inventory`",
            Some("`Builder::build_server(false)`"),
        ),
        (
            "message inventory { oneof pick { string a = 1; } }",
            "the module prost generates for message `t.inventory`'s nested types and the \
             descriptor module generated for service `t.Inventory` would both be `inventory`",
            None,
        ),
    ];
    for (declaration, expected, switch) in cases {
        let path = dir.proto(&format!(
            "syntax = \"proto3\";\npackage t;\nmessage M {{}}\n{service}{declaration}\n"
        ));
        let err = generate(Builder::new(), &dir).expect_err(declaration);
        let Error::Clash { element, .. } = &err else {
            panic!("expected Clash, got {err}");
        };
        assert!(element.starts_with("t."), "{element}");
        let text = text(&err);
        assert_starts(&text, &format!("{}:7:", path.display()));
        assert_has(&text, &[expected, "rename one of them in the .proto"]);
        match switch {
            Some(switch) => assert_has(&text, &[switch]),
            None => assert!(!text.contains("Builder::"), "{text}"),
        }
    }

    // A message's module exists only when it has nested items; without a
    // client, `InventoryClient` is free.
    dir.proto(&format!(
        "syntax = \"proto3\";\npackage t;\nmessage M {{}}\n{service}\
         message inventory {{ optional string a = 1; map<string, M> m = 2; }}\n\
         message InventoryClient {{}}\n"
    ));
    generate(Builder::new().build_server(false).build_client(false), &dir)
        .expect("no clash without a module or client");
}

#[test]
fn a_clash_across_files_of_one_package_is_found() {
    let dir = Scratch::new("across");
    dir.write(
        "a.proto",
        "syntax = \"proto3\";\npackage t;\nmessage M {}\nservice Inventory { rpc Get(M) returns (M); }\n",
    );
    let b = dir.write(
        "b.proto",
        "syntax = \"proto3\";\npackage t;\nimport \"a.proto\";\nmessage InventoryClient {}\n",
    );
    let err = Builder::new()
        .generate(&["b.proto"], &[&dir.0])
        .expect_err("clash");
    assert_starts(
        &text_of(&err),
        &format!("{}:4:9: message `t.InventoryClient`", b.display()),
    );
}

#[test]
fn a_missing_import_lists_the_include_directories() {
    let dir = Scratch::new("import");
    let other = Scratch::new("import-other");
    let path = dir.proto("syntax = \"proto3\";\npackage t;\nimport \"shared/money.proto\";\n");
    let err = Builder::new()
        .generate(&["t.proto"], &[&dir.0, &other.0])
        .expect_err("missing import");
    let text = text(&err);
    assert_starts(&text, &format!("{}:3:", path.display()));
    assert_has(
        &text,
        &[
            "import 'shared/money.proto' not found",
            &format!(
                "include directories searched: `{}`, `{}`",
                dir.0.display(),
                other.0.display()
            ),
        ],
    );

    let err = Builder::new()
        .generate(&["absent.proto"], &[&dir.0])
        .expect_err("missing file");
    assert_has(
        &text_of(&err),
        &[
            "absent.proto: file not found",
            &format!("include directories searched: `{}`", dir.0.display()),
        ],
    );
}

#[test]
fn an_unknown_type_suggests_the_nearest_defined_name() {
    let dir = Scratch::new("unknown");
    dir.write(
        "money.proto",
        "syntax = \"proto3\";\npackage money;\nmessage Amount { int64 cents = 1; }\n",
    );
    let path = dir.proto(
        "syntax = \"proto3\";\npackage t;\nimport \"money.proto\";\n\
         message Item { string sku = 1; }\n\
         message Basket {\n  repeated Itme items = 1;\n}\n",
    );
    let err = generate(Builder::new(), &dir).expect_err("unknown type");
    let text = text(&err);
    assert_starts(&text, &format!("{}:6:12: ", path.display()));
    assert_has(&text, &["'Itme' is not defined", "did you mean `Item`?"]);

    dir.proto(
        "syntax = \"proto3\";\npackage t;\nimport \"money.proto\";\n\
         message Basket {\n  money.Amunt total = 1;\n}\n",
    );
    let err = generate(Builder::new(), &dir).expect_err("unknown qualified type");
    assert_has(&text_of(&err), &["did you mean `money.Amount`?"]);

    // Nothing close: no guess.
    dir.proto("syntax = \"proto3\";\npackage t;\nmessage Basket {\n  Wallet total = 1;\n}\n");
    let err = generate(Builder::new(), &dir).expect_err("unknown type");
    assert!(!text_of(&err).contains("did you mean"), "{err}");
}

#[test]
fn debug_prints_like_display_for_every_located_error() {
    let dir = Scratch::new("debug");
    let path = dir.proto("syntax = \"proto3\";\npackage t;\nmessage M {\n  string a = 1\n}\n");
    let err = generate(Builder::new(), &dir).expect_err("syntax error");
    let debug = format!("{err:?}");
    assert_starts(&debug, &format!("{}:5:1: ", path.display()));
    assert_eq!(debug, err.to_string());
    assert!(!debug.contains("Proto {"), "{debug}");
}

/// [`text`], for tests whose locals are named `text`.
fn text_of(err: &Error) -> String {
    text(err)
}
