//! Secrets Manager's events as an EventBridge rule delivers them to SQS: which secrets a message
//! names, and when the change happened. Pure: no IO.
//!
//! An event only says which secret to look at. What the secret holds now is read with
//! DescribeSecret, because events arrive late, twice or out of order. A message body can carry
//! the request parameters of the call it reports, so nothing here keeps or shows more of it than
//! the secret ids and the time.

use serde_json::Value;

/// The EventBridge `source` of Secrets Manager's events.
pub const SOURCE: &str = "aws.secretsmanager";

/// What one queue message is.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A Secrets Manager event naming these secrets (names, ARNs or partial ARNs).
    Secrets {
        ids: Vec<String>,
        /// The event's own time (EventBridge's `time`, whole seconds).
        time: Option<jiff::Timestamp>,
    },
    /// A well-formed event that is not about a secret (another source, or no secret named).
    Ignored(&'static str),
    /// Not an EventBridge event.
    Malformed(&'static str),
}

/// Read a message body: an EventBridge event, or one wrapped in an SNS notification (a topic
/// between the rule and the queue).
pub fn parse(body: &str) -> Parsed {
    let Ok(mut event) = serde_json::from_str::<Value>(body) else {
        return Parsed::Malformed("the body is not JSON");
    };
    if event.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(inner) = event.get("Message").and_then(Value::as_str)
    {
        match serde_json::from_str::<Value>(inner) {
            Ok(v) => event = v,
            Err(_) => return Parsed::Malformed("the SNS message is not JSON"),
        }
    }
    let (Some(source), Some(detail)) = (event.get("source").and_then(Value::as_str), event.get("detail")) else {
        return Parsed::Malformed("not an EventBridge event (no source or detail)");
    };
    if source != SOURCE {
        return Parsed::Ignored("not from aws.secretsmanager");
    }
    let mut ids: Vec<String> = Vec::new();
    let mut add = |v: Option<&Value>| {
        if let Some(id) = v.and_then(Value::as_str).filter(|s| !s.is_empty())
            && !ids.iter().any(|known| known == id)
        {
            ids.push(id.to_string());
        }
    };
    // CloudTrail API calls (PutSecretValue, UpdateSecretVersionStage, RotateSecret, ...).
    add(detail.pointer("/requestParameters/secretId"));
    add(detail.pointer("/responseElements/arn"));
    // Secrets Manager's service events (RotationSucceeded, ...).
    add(detail.pointer("/additionalEventData/SecretId"));
    add(detail.pointer("/serviceEventDetails/secretId"));
    for resource in event.get("resources").and_then(Value::as_array).into_iter().flatten() {
        if resource.as_str().is_some_and(|r| r.contains(":secretsmanager:")) {
            add(Some(resource));
        }
    }
    if ids.is_empty() {
        return Parsed::Ignored("names no secret");
    }
    let time = event.get("time").and_then(Value::as_str).and_then(|t| t.parse().ok());
    Parsed::Secrets { ids, time }
}

/// The names an id can stand for: a name is itself; an ARN
/// (`arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters>`) is its name, and a
/// partial ARN (without the six characters AWS adds) its name as written.
fn names(id: &str) -> impl Iterator<Item = &str> {
    let (rest, arn) = match id.split_once(":secret:") {
        Some((head, rest)) if head.starts_with("arn:") => (rest, true),
        _ => (id, false),
    };
    let suffixed = arn
        .then(|| rest.rsplit_once('-'))
        .flatten()
        .filter(|(_, s)| s.len() == 6 && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|(name, _)| name);
    std::iter::once(rest).chain(suffixed)
}

/// Whether an event's id and a watched key (each a name, an ARN or a partial ARN) can be the same
/// secret. A partial ARN is ambiguous (a name may end in `-` and six characters), so this may say
/// yes for two secrets; the DescribeSecret that follows decides.
pub fn same_secret(event_id: &str, key: &str) -> bool {
    event_id == key || names(event_id).any(|a| names(key).any(|b| a == b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbC123";

    fn cloudtrail(event_name: &str, request: Value, response: Value) -> String {
        serde_json::json!({
            "version": "0", "id": "e1", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.secretsmanager", "account": "123456789012", "time": "2026-12-02T10:00:05Z",
            "region": "us-east-1", "resources": [],
            "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": event_name,
                "requestParameters": request, "responseElements": response}
        })
        .to_string()
    }

    #[test]
    fn what_a_message_names() {
        let put =
            cloudtrail("PutSecretValue", serde_json::json!({"secretId": "prod/db"}), serde_json::json!({"arn": ARN}));
        let Parsed::Secrets { ids, time } = parse(&put) else { panic!("{:?}", parse(&put)) };
        assert_eq!(ids, ["prod/db", ARN]);
        assert_eq!(time, Some("2026-12-02T10:00:05Z".parse().expect("a time")));

        let stage = cloudtrail("UpdateSecretVersionStage", serde_json::json!({"secretId": ARN}), Value::Null);
        assert!(matches!(parse(&stage), Parsed::Secrets { ids, .. } if ids == [ARN]), "named once");

        let rotated = serde_json::json!({"source": "aws.secretsmanager", "detail-type": "AWS Service Event via CloudTrail",
            "resources": [ARN], "detail": {"eventName": "RotationSucceeded", "additionalEventData": {"SecretId": ARN}}});
        assert!(matches!(parse(&rotated.to_string()), Parsed::Secrets { ids, time: None } if ids == [ARN]));

        let sns = serde_json::json!({"Type": "Notification", "Message": put}).to_string();
        assert!(matches!(parse(&sns), Parsed::Secrets { ids, .. } if ids.len() == 2), "through an SNS topic");

        let other = serde_json::json!({"source": "aws.ec2", "detail": {}}).to_string();
        assert_eq!(parse(&other), Parsed::Ignored("not from aws.secretsmanager"));
        let list = cloudtrail("ListSecrets", Value::Null, Value::Null);
        assert_eq!(parse(&list), Parsed::Ignored("names no secret"));
        for bad in [
            "",
            "not json",
            "[1,2]",
            "{\"source\": \"aws.secretsmanager\"}",
            "{\"Type\": \"Notification\", \"Message\": \"{\"}",
        ] {
            assert!(matches!(parse(bad), Parsed::Malformed(_)), "{bad:?}");
        }
    }

    #[test]
    fn an_id_and_a_key_are_the_same_secret_by_name_arn_or_partial_arn() {
        let partial = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db";
        for (event, key, same) in [
            ("prod/db", "prod/db", true),
            (ARN, "prod/db", true),
            ("prod/db", ARN, true),
            (partial, "prod/db", true),
            (partial, ARN, true),
            (ARN, ARN, true),
            ("prod/db2", "prod/db", false),
            (ARN, "prod/db-AbC123", true),
            ("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/other-XyZ789", "prod/db", false),
            ("prod", "prod/db", false),
            ("db-AbC123", "db", false),
        ] {
            assert_eq!(same_secret(event, key), same, "{event} ~ {key}");
        }
    }
}
