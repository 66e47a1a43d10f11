//! `keel list ADDR [SERVICE]` and `keel describe ADDR SYMBOL`: what a
//! server serves, from its reflection service (or `--proto` files), as
//! grpcurl shows it.

use std::fmt::Write as _;

use prost_reflect::{
    Cardinality, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor,
};

use crate::failure::Failure;
use crate::schema::{SchemaArgs, closest};
use crate::target::{Target, duration};

/// The flags of `keel list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The server: host:port, grpc://host:port or http://host:port
    pub addr: String,
    /// List this service's methods instead of the services
    pub service: Option<String>,
    /// Deadline of the reflection calls
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub timeout: std::time::Duration,
    #[command(flatten)]
    pub schema: SchemaArgs,
}

/// The flags of `keel describe`.
#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// The server: host:port, grpc://host:port or http://host:port
    pub addr: String,
    /// A service, method (package.Service/Method), message or enum
    pub symbol: String,
    /// Deadline of the reflection calls
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub timeout: std::time::Duration,
    #[command(flatten)]
    pub schema: SchemaArgs,
}

/// Runs `keel list`.
pub async fn list(args: ListArgs) -> Result<(), Failure> {
    let target = Target::parse(&args.addr, None)?;
    let symbols: Vec<&str> = args.service.as_deref().into_iter().collect();
    let schema = args.schema.load(&target, args.timeout, &symbols).await?;
    let Some(name) = &args.service else {
        for s in &schema.services {
            println!("{s}");
        }
        return Ok(());
    };
    let Some(service) = schema.pool.get_service_by_name(name) else {
        return Err(unknown(name, &schema.services));
    };
    for m in service.methods() {
        println!("{}.{}", service.full_name(), m.name());
    }
    Ok(())
}

/// Runs `keel describe`.
pub async fn describe(args: DescribeArgs) -> Result<(), Failure> {
    let target = Target::parse(&args.addr, None)?;
    let symbol = args.symbol.trim_start_matches('/').replace('/', ".");
    let schema = args.schema.load(&target, args.timeout, &[&symbol]).await?;
    let pool = &schema.pool;
    let text = if let Some(s) = pool.get_service_by_name(&symbol) {
        service_text(&s)
    } else if let Some(m) = pool.get_message_by_name(&symbol) {
        message_text(&m, "")
    } else if let Some(e) = pool.get_enum_by_name(&symbol) {
        enum_text(&e, "")
    } else if let Some(m) = symbol.rsplit_once('.').and_then(|(s, m)| {
        pool.get_service_by_name(s)?
            .methods()
            .find(|x| x.name() == m)
    }) {
        format!("{}:\n{}\n", m.full_name(), method_line(&m))
    } else {
        let mut known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        known.extend(pool.all_messages().map(|m| m.full_name().to_owned()));
        known.extend(pool.all_enums().map(|e| e.full_name().to_owned()));
        return Err(unknown(&symbol, &known));
    };
    print!("{text}");
    Ok(())
}

fn unknown(name: &str, known: &[String]) -> Failure {
    let close = closest(name, known);
    if close.is_empty() {
        Failure::usage(format!("unknown symbol {name}"))
    } else {
        Failure::usage(format!(
            "unknown symbol {name}; did you mean {}?",
            close.join(" or ")
        ))
    }
}

fn method_line(m: &MethodDescriptor) -> String {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    format!(
        "rpc {}({}{}) returns ({}{});",
        m.name(),
        stream(m.is_client_streaming()),
        m.input().full_name(),
        stream(m.is_server_streaming()),
        m.output().full_name()
    )
}

fn service_text(s: &ServiceDescriptor) -> String {
    let mut out = format!("{} is a service:\nservice {} {{\n", s.full_name(), s.name());
    for m in s.methods() {
        let _ = writeln!(out, "  {}", method_line(&m));
    }
    out.push_str("}\n");
    out
}

fn field_type(f: &FieldDescriptor) -> String {
    match f.kind() {
        Kind::Message(m) if f.is_map() => {
            let key = m.map_entry_key_field();
            let value = m.map_entry_value_field();
            format!("map<{}, {}>", field_type(&key), field_type(&value))
        }
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

fn message_text(m: &MessageDescriptor, indent: &str) -> String {
    let mut out = if indent.is_empty() {
        format!("{} is a message:\n", m.full_name())
    } else {
        String::new()
    };
    let _ = writeln!(out, "{indent}message {} {{", m.name());
    for f in m.fields() {
        let label = match (f.is_map(), f.cardinality()) {
            (true, _) => "",
            (_, Cardinality::Repeated) => "repeated ",
            (_, Cardinality::Required) => "required ",
            (_, Cardinality::Optional) if f.field_descriptor_proto().proto3_optional() => {
                "optional "
            }
            (_, Cardinality::Optional)
                if m.parent_file().syntax() == prost_reflect::Syntax::Proto2 =>
            {
                "optional "
            }
            _ => "",
        };
        let oneof = f
            .containing_oneof()
            .filter(|o| !o.is_synthetic())
            .map(|o| format!("  // oneof {}", o.name()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{indent}  {label}{} {} = {};{oneof}",
            field_type(&f),
            f.name(),
            f.number()
        );
    }
    let inner = format!("{indent}  ");
    for nested in m.child_messages().filter(|n| !n.is_map_entry()) {
        out.push_str(&message_text(&nested, &inner));
    }
    for e in m.child_enums() {
        out.push_str(&enum_text(&e, &inner));
    }
    let _ = writeln!(out, "{indent}}}");
    out
}

fn enum_text(e: &EnumDescriptor, indent: &str) -> String {
    let mut out = if indent.is_empty() {
        format!("{} is an enum:\n", e.full_name())
    } else {
        String::new()
    };
    let _ = writeln!(out, "{indent}enum {} {{", e.name());
    for v in e.values() {
        let _ = writeln!(out, "{indent}  {} = {};", v.name(), v.number());
    }
    let _ = writeln!(out, "{indent}}}");
    out
}
