//! The simulator's DTO table matches the published API client's `IClientApiDto`.

#[test]
fn dto_fields_are_the_published_clients_in_order() {
    let dts = include_str!("../contracts/IClientApiDto-3.1.4.d.ts.txt");
    let body = dts
        .split("export interface IClientApiDto {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .expect("IClientApiDto in the excerpt");
    let names: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().split_once(':').map(|(n, _)| n.trim()))
        .collect();
    let ours: Vec<&str> = sim_duende::dto::FIELDS.iter().map(|f| f.name).collect();
    assert_eq!(names, ours);
    // Optional (`| undefined`) in the client exactly where the C# type is a reference or nullable.
    for line in body.lines().filter(|l| l.contains(':')) {
        let (name, ty) = line.trim().split_once(':').unwrap();
        let f = sim_duende::dto::field(name.trim()).unwrap();
        let nullable = matches!(
            f.kind,
            sim_duende::dto::Kind::NullableInt
                | sim_duende::dto::Kind::Str
                | sim_duende::dto::Kind::StrList
                | sim_duende::dto::Kind::Claims
                | sim_duende::dto::Kind::Properties
                | sim_duende::dto::Kind::DateTime
        );
        // clientId/clientName are [Required] strings: the client types them as plain strings.
        let required = matches!(name.trim(), "clientId" | "clientName");
        assert_eq!(
            ty.contains("undefined"),
            nullable && !required,
            "{name}: {ty}"
        );
    }
}
